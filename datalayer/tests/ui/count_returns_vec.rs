use datalayer::{Table, query_group};

#[derive(Table)]
struct User {
    #[pk]
    id: i64,
    active: bool,
}

#[query_group]
impl User {
    fn count_active() -> Vec<User> {
        Self::filter(|u| u.active).count()
    }
}

fn main() {}
