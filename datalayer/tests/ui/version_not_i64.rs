use datalayer::Table;

#[derive(Table)]
struct Doc {
    #[pk]
    id: i64,
    #[version]
    version: String,
}

fn main() {
    let _ = <Doc as Table>::schema();
}
