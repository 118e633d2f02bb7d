use datalayer::{Table, query_group};

#[derive(Table)]
struct Item {
    #[pk]
    id: i64,
    doc: serde_json::Value,
}

#[query_group]
impl Item {
    fn by_doc(d: serde_json::Value) -> Vec<Item> {
        Self::filter(|i| i.doc == d)
    }
}

fn main() {}
