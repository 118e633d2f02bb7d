use datalayer::{Table, query_group};

#[derive(Table)]
struct User {
    #[pk]
    id: i64,
    age: i32,
}

#[query_group]
impl User {
    fn older(min: i32) -> Vec<User> {
        Self::filter(|u| u.agee > min)
    }
}

fn main() {}
