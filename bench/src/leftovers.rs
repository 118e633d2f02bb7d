//! The scratch areas (PostgreSQL schemas, Redis and TiKV namespaces) a server
//! handle made and has not removed yet: each is forgotten when its place removes
//! it, and whatever is left (after an error or a panic) is removed when the
//! handle is dropped.

use std::sync::Mutex;

use rand::Rng;

/// A fresh id for this run's names: eight random lower-case letters.
pub fn run_id() -> String {
    let mut r = rand::rng();
    (0..8)
        .map(|_| (b'a' + r.random_range(0..26)) as char)
        .collect()
}

/// Names of scratch areas still to remove, all `<prefix><tag>`.
pub struct Leftovers {
    prefix: String,
    names: Mutex<Vec<String>>,
}

impl Leftovers {
    /// An empty list of names starting with `prefix`.
    pub fn new(prefix: String) -> Self {
        Self {
            prefix,
            names: Mutex::new(Vec::new()),
        }
    }

    /// The name `<prefix><tag>`, remembered until [`Leftovers::forget`].
    pub fn add(&self, tag: &str) -> String {
        let name = format!("{}{tag}", self.prefix);
        self.names.lock().expect("leftover list").push(name.clone());
        name
    }

    /// Forgets `name` (removed now).
    pub fn forget(&self, name: &str) {
        self.names
            .lock()
            .expect("leftover list")
            .retain(|s| s != name);
    }

    /// Takes every name still on the list (a dropping handle removes them).
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(self.names.get_mut().unwrap_or_else(|e| e.into_inner()))
    }
}
