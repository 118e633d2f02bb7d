use datalayer::{Table, query_group};

// `crate` takes a path in a string.
#[derive(Table)]
#[table(crate = "not a path")]
struct Song {
    #[pk]
    id: i64,
}

#[derive(Table)]
#[table(crate = datalayer_core)]
struct Album {
    #[pk]
    id: i64,
}

// `name` takes a string or a constant.
#[derive(Table)]
#[table(name = 3)]
struct Artist {
    #[pk]
    id: i64,
}

#[derive(Table)]
struct User {
    #[pk]
    id: i64,
}

// A path without generic arguments.
#[query_group(crate = "datalayer::<u8>")]
impl User {
    fn by_id(id: i64) -> User {
        Self::filter(|u| u.id == id)
    }
}

#[derive(Table)]
struct Team {
    #[pk]
    id: i64,
}

#[query_group(krate = "datalayer")]
impl Team {
    fn by_id(id: i64) -> Team {
        Self::filter(|t| t.id == id)
    }
}

fn main() {}
