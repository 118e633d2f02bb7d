use datalayer::{Table, query_group};

#[derive(Table)]
struct User {
    #[pk]
    id: i64,
    age: i32,
    email: String,
}

#[query_group]
impl User {
    fn set_age(id: i64, age: &str) -> u64 {
        Self::filter(|u| u.id == id).update(|u| u.age = age)
    }
    fn forget_email(id: i64) -> u64 {
        Self::filter(|u| u.id == id).update(|u| u.email = None)
    }
}

fn main() {}
