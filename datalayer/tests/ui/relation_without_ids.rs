use datalayer::Table;

#[derive(Table)]
struct Song {
    #[pk]
    id: i64,
}

#[derive(Table)]
struct User {
    #[pk]
    id: i64,
    song_ids: Vec<i64>,
    #[relation]
    songs: Vec<Song>,
}

fn main() {}
