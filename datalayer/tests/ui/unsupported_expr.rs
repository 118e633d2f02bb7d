use datalayer::{Table, query_group};

#[derive(Table)]
struct User {
    #[pk]
    id: i64,
    name: String,
}

#[query_group]
impl User {
    fn long_names() -> Vec<User> {
        Self::filter(|u| u.name.len() > 3)
    }
}

fn main() {}
