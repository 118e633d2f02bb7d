use datalayer::Table;

const ADULT: i32 = 18;

#[derive(Table)]
#[index(name = "adults", fields(age), when = |u| u.age >= ADULT)]
struct User {
    #[pk]
    id: i64,
    age: i32,
}

fn main() {}
