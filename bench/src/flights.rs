//! The nycflights13 `flights` table, read once into memory.
//!
//! Source: `examples/data/nycflights13/flights.csv.gz` (gzip'd CSV with a
//! header row, 336,776 rows; an empty field is NULL). Column types follow
//! `examples/data/nycflights13/README.md`; the columns it marks `?` are
//! `Option`s here.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::Context;
use flate2::read::GzDecoder;
use serde::Deserialize;

/// Rows in the full file.
pub const FLIGHTS_ROWS: usize = 336_776;

/// One flight. Field names are the CSV header's, so rows are matched by name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FlightRow {
    /// Original R row number (1-based); primary key.
    pub id: i64,
    /// Year of departure.
    pub year: i64,
    /// Month of departure (1-12).
    pub month: i64,
    /// Day of month of departure.
    pub day: i64,
    /// Actual departure time, local hhmm; `None` when cancelled.
    pub dep_time: Option<i64>,
    /// Scheduled departure time, local hhmm.
    pub sched_dep_time: i64,
    /// Departure delay in minutes (negative = early).
    pub dep_delay: Option<i64>,
    /// Actual arrival time, local hhmm.
    pub arr_time: Option<i64>,
    /// Scheduled arrival time, local hhmm.
    pub sched_arr_time: i64,
    /// Arrival delay in minutes (negative = early).
    pub arr_delay: Option<i64>,
    /// Two-letter carrier code (→ airlines.carrier).
    pub carrier: String,
    /// Flight number.
    pub flight: i64,
    /// Plane tail number (→ planes.tailnum), sometimes missing.
    pub tailnum: Option<String>,
    /// Origin airport FAA code (→ airports.faa).
    pub origin: String,
    /// Destination airport FAA code (→ airports.faa).
    pub dest: String,
    /// Time in the air, in minutes.
    pub air_time: Option<i64>,
    /// Distance between airports, in miles.
    pub distance: i64,
    /// Scheduled departure hour.
    pub hour: i64,
    /// Scheduled departure minute.
    pub minute: i64,
    /// Scheduled departure hour as an RFC 3339 UTC timestamp.
    pub time_hour: String,
}

/// Read every row of a gzip'd `flights.csv.gz` into memory, in file order.
///
/// # Errors
///
/// The file cannot be opened or decompressed, the header lacks a column of
/// [`FlightRow`], or a field does not parse as its column's type.
pub fn load_flights(path: &Path) -> anyhow::Result<Vec<FlightRow>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = csv::Reader::from_reader(GzDecoder::new(BufReader::new(file)));
    let mut rows = Vec::with_capacity(FLIGHTS_ROWS);
    for (i, row) in reader.deserialize().enumerate() {
        rows.push(row.with_context(|| format!("{}: data row {}", path.display(), i + 1))?);
    }
    Ok(rows)
}
