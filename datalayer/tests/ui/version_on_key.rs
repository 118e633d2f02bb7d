use datalayer::Table;

#[derive(Table)]
struct Doc {
    #[pk]
    #[version]
    id: i64,
    body: String,
}

#[derive(Table)]
struct Twice {
    #[pk]
    id: i64,
    #[version]
    a: i64,
    #[version]
    b: i64,
}

fn main() {}
