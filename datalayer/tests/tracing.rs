//! The `tracing` contract: one span per query (engine, query name, rows, duration) and
//! one per transaction (engine, outcome, duration).

use datalayer::{Table, query_group};
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "items")]
struct Item {
    #[pk]
    id: i64,
    qty: i32,
}

#[query_group]
impl Item {
    fn low(max: i32) -> Vec<Item> {
        Self::filter(|i| i.qty < max)
    }
}

/// Every closed span: its name and the fields recorded on it.
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

#[derive(Default)]
struct Fields(Vec<(String, String)>);
impl Visit for Fields {
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.push((f.name().to_owned(), format!("{v:?}")));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.push((f.name().to_owned(), v.to_owned()));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.push((f.name().to_owned(), v.to_string()));
    }
}

struct Recorder(Seen);
impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        ctx.span(id).expect("span").extensions_mut().insert(f);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("span");
        let mut ext = span.extensions_mut();
        if let Some(f) = ext.get_mut::<Fields>() {
            values.record(f);
        }
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).expect("span");
        let fields = span
            .extensions_mut()
            .remove::<Fields>()
            .unwrap_or_default()
            .0;
        self.0
            .lock()
            .expect("lock")
            .push((span.name().to_owned(), fields));
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn queries_and_transactions_open_spans() {
    let seen: Seen = Arc::default();
    let subscriber = tracing_subscriber::registry()
        .with(Recorder(seen.clone()))
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = datalayer::builder("etch::memory:")
        .table::<Item>()
        .queries::<Item>()
        .connect()
        .await
        .unwrap();
    db.repo::<Item>()
        .insert_many(&[
            Item { id: 1, qty: 2 },
            Item { id: 2, qty: 9 },
            Item { id: 3, qty: 1 },
        ])
        .await
        .unwrap();
    assert_eq!(Item::low(&db, 5).await.unwrap().len(), 2);
    db.tx(async |tx| Item::low(tx, 5).await).await.unwrap();

    let seen = seen.lock().unwrap();
    let query = seen
        .iter()
        .find(|(n, f)| n == "datalayer.query" && field(f, "query") == Some("Item::low"))
        .expect("a span for the query");
    assert_eq!(field(&query.1, "engine"), Some("etch"));
    assert_eq!(field(&query.1, "rows"), Some("2"));
    assert!(field(&query.1, "duration_us").is_some(), "{query:?}");
    let insert = seen
        .iter()
        .find(|(n, f)| n == "datalayer.query" && field(f, "query") == Some("insert"))
        .expect("a span for the insert");
    assert_eq!(field(&insert.1, "rows"), Some("3"));
    let tx = seen
        .iter()
        .find(|(n, _)| n == "datalayer.tx")
        .expect("a span for the transaction");
    assert_eq!(field(&tx.1, "outcome"), Some("commit"));
    assert!(field(&tx.1, "duration_us").is_some());
}
