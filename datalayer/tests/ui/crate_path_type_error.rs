// With `crate = "..."`, type errors still point at the user's expression.
#[derive(datalayer::Table)]
#[table(crate = "datalayer_core")]
struct User {
    #[pk]
    id: i64,
    age: i32,
}

#[datalayer::query_group(crate = "datalayer_core")]
impl User {
    fn aged(name: &str) -> Vec<User> {
        Self::filter(|u| u.age == name)
    }
}

fn main() {}
