use datalayer::Table;

#[derive(Table)]
#[index(name = "by_mail", fields(mail))]
struct User {
    #[pk]
    id: i64,
    email: String,
}

fn main() {}
