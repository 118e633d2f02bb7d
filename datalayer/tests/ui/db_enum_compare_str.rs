use datalayer::{DbEnum, Table, query_group};

#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
enum Status {
    Draft,
    Live,
}

#[derive(Table)]
struct Post {
    #[pk]
    id: i64,
    status: Status,
}

#[query_group]
impl Post {
    fn live(s: &str) -> Vec<Post> {
        Self::filter(|p| p.status == s)
    }
}

#[derive(DbEnum)]
enum WithData {
    A(i32),
}

#[derive(Table)]
struct Keyed {
    #[pk]
    #[column(json)]
    id: Vec<i64>,
}

fn main() {}
