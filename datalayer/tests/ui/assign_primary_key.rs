use datalayer::{Table, query_group};

#[derive(Table)]
struct User {
    #[pk]
    id: i64,
    age: i32,
}

#[query_group]
impl User {
    fn move_id(from: i64, to: i64) -> u64 {
        Self::filter(|u| u.id == from).update(|u| u.id = to)
    }
}

fn main() {}
