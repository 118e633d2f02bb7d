use datalayer::{Table, query_group};

#[derive(Table)]
struct User {
    #[pk]
    id: i64,
    age: i32,
}

#[query_group]
impl User {
    fn aged(name: &str) -> Vec<User> {
        Self::filter(|u| u.age == name)
    }
}

fn main() {}
