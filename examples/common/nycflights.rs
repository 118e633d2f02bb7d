//! Reading the vendored nycflights13 files (`examples/data/nycflights13/*.csv.gz`), shared
//! by the examples. Empty fields (and `NA`) are missing values.

use anyhow::Context;
use std::io::Read;
use std::path::Path;

/// A CSV reader over `<dir>/<name>.csv.gz`, header row consumed.
pub fn open_csv(dir: &Path, name: &str) -> anyhow::Result<csv::Reader<Box<dyn Read>>> {
    let path = dir.join(format!("{name}.csv.gz"));
    let file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let gz: Box<dyn Read> = Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    Ok(csv::ReaderBuilder::new().has_headers(true).from_reader(gz))
}

/// An optional field: `None` when empty or `NA`.
pub fn opt<T: std::str::FromStr>(s: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    if s.is_empty() || s == "NA" {
        Ok(None)
    } else {
        Ok(Some(s.parse()?))
    }
}

/// A required field.
pub fn req<T: std::str::FromStr>(s: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    opt(s)?.context("missing value in a required column")
}
