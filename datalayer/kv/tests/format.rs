//! Golden bytes of the KV layout described in `FORMAT.md`: a change to the key or value
//! format must fail here.

use datalayer_core::{
    CmpOp, ColumnDef, ColumnType, Engine, Expr, IndexDef, Op, Row, TableSchema, TxOptions, Value,
    WriteMode,
};
use datalayer_kv::codec::{
    self, TableKeys, catalog_key, decode_row, encode_row, encode_value, encode_values, index_key,
    index_prefix, pk_suffix, prefix_end, row_prefix,
};
use datalayer_kv::mem::MemKv;
use datalayer_kv::{KvEngine, KvStore};
use std::ops::Bound;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex with spaces and `|` separators for readability.
fn h(s: &str) -> String {
    let out: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '|')
        .collect();
    assert!(
        out.len().is_multiple_of(2) && out.chars().all(|c| c.is_ascii_hexdigit()),
        "{s}"
    );
    out
}

#[track_caller]
fn assert_bytes(got: &[u8], want: &str, what: &str) {
    assert_eq!(hex(got), h(want), "{what}");
}

fn col(name: &str, ty: ColumnType, nullable: bool) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        field: name.into(),
        ty,
        nullable,
    }
}

/// `users (id I64 pk, email String, age I32?)`, unique `by_email`, non-unique `by_age`,
/// conditional `minors` (`age < 18`).
fn users() -> TableSchema {
    TableSchema {
        version: None,
        name: "users".into(),
        columns: vec![
            col("id", ColumnType::I64, false),
            col("email", ColumnType::String, false),
            col("age", ColumnType::I32, true),
        ],
        primary_key: vec![0],
        indexes: vec![
            IndexDef {
                name: "by_email".into(),
                columns: vec![1],
                unique: true,
                when: None,
            },
            IndexDef {
                name: "by_age".into(),
                columns: vec![2],
                unique: false,
                when: None,
            },
            IndexDef {
                name: "minors".into(),
                columns: vec![2],
                unique: false,
                when: Some(Expr::cmp(
                    CmpOp::Lt,
                    Expr::Column(2),
                    Expr::Literal(Value::I32(18)),
                )),
            },
        ],
    }
}

fn user(id: i64, email: &str, age: Option<i32>) -> Row {
    vec![
        Value::I64(id),
        Value::String(email.into()),
        age.map_or(Value::Null, Value::I32),
    ]
}

const MC_USERS: &str = "01 7573657273 000000 05";
const MC_BY_EMAIL: &str = "01 62795f656d61696c 08";
const MC_BY_AGE: &str = "01 62795f616765 0000 06";

#[test]
fn column_values_in_keys() {
    let cases: Vec<(Value, &str)> = vec![
        (Value::Null, "00"),
        (Value::Bool(false), "01 00"),
        (Value::Bool(true), "01 01"),
        (Value::I16(-2), "01 7ffe"),
        (Value::I16(i16::MIN), "01 0000"),
        (Value::I32(30), "01 8000001e"),
        (Value::I32(-1), "01 7fffffff"),
        (Value::I64(1), "01 8000000000000001"),
        (Value::I64(-1), "01 7fffffffffffffff"),
        (Value::I64(i64::MAX), "01 ffffffffffffffff"),
        (Value::F32(1.5), "01 bfc00000"),
        (Value::F32(-1.5), "01 403fffff"),
        (Value::F64(-2.0), "01 3fffffffffffffff"),
        (Value::F64(0.0), "01 8000000000000000"),
        (Value::F64(-0.0), "01 8000000000000000"),
        (Value::F64(1.0), "01 bff0000000000000"),
        (Value::String(String::new()), "01 00"),
        (Value::String("a@x".into()), "01 01 614078 0000000000 03"),
        (
            Value::String("abcdefgh".into()),
            "01 01 6162636465666768 08",
        ),
        (
            Value::String("abcdefghi".into()),
            "01 01 6162636465666768 09 69 00000000000000 01",
        ),
        (Value::Bytes(vec![]), "01 00"),
        (Value::Bytes(vec![0x00, 0xff]), "01 01 00ff000000000000 02"),
        (Value::Uuid([0; 16]), "01 00000000000000000000000000000000"),
        (Value::Timestamp(1), "01 8000000000000001"),
        (Value::Date(1), "01 80000001"),
        (Value::Decimal("1.5".parse().unwrap()), "01 03 81 02 06 00"),
        (Value::Decimal("-1.5".parse().unwrap()), "01 01 7e fd f9 ff"),
        (Value::Decimal(Default::default()), "01 02"),
    ];
    for (v, want) in cases {
        let mut b = Vec::new();
        encode_value(&mut b, &v);
        assert_bytes(&b, want, &format!("key encoding of {v:?}"));
    }
    let mut b = Vec::new();
    encode_values(
        &mut b,
        &[Value::String("a".into()), Value::Null, Value::I16(1)],
    );
    assert_bytes(
        &b,
        "01 01 61 00000000000000 01 | 00 | 01 8001",
        "values concatenate",
    );
}

#[test]
fn column_values_in_rows() {
    let row: Row = vec![
        Value::Null,
        Value::Bool(true),
        Value::I16(-2),
        Value::I32(30),
        Value::I64(1),
        Value::I64(-1),
        Value::I64(300),
        Value::F32(1.5),
        Value::F64(-2.0),
        Value::String("b@x".into()),
        Value::Bytes(vec![0x00, 0xff]),
    ];
    assert_bytes(
        &encode_row(&row),
        "0b | 00 | 01 01 | 02 03 | 03 3c | 04 02 | 04 01 | 04 d804 | 05 0000c03f \
         | 06 00000000000000c0 | 07 03 624078 | 08 02 00ff",
        "postcard of a row with every value type",
    );
    let typed: Row = vec![
        Value::Uuid([0; 16]),
        Value::Timestamp(1),
        Value::Date(1),
        Value::Decimal("1.5".parse().unwrap()),
        Value::Json("{}".into()),
    ];
    assert_bytes(
        &encode_row(&typed),
        "05 | 09 00000000000000000000000000000000 | 0a 02 | 0b 02 | 0c 1e 01 | 0d 02 7b7d",
        "postcard of the typed values (variants 9 to 13, after the original ones)",
    );
}

#[test]
fn catalog_key_bytes() {
    assert_bytes(
        &catalog_key("users"),
        &format!("63 | {MC_USERS}"),
        "catalog key",
    );
    assert_eq!(codec::CATALOG, b'c');
    assert_eq!(codec::ROW, b'r');
    assert_eq!(codec::INDEX, b'i');
    assert_eq!(codec::UNIQUE, b'u');
    assert_eq!(codec::MIGRATING, b'm');
}

#[test]
fn row_key_and_value() {
    let t = users();
    let row = user(1, "a@x", Some(30));
    let keys = TableKeys::new(&t);
    assert_bytes(&row_prefix(&t), &format!("72 | {MC_USERS}"), "row prefix");
    assert_bytes(&keys.row, &format!("72 | {MC_USERS}"), "TableKeys::row");
    assert_bytes(&pk_suffix(&t, &row), "01 8000000000000001", "key suffix");
    assert_bytes(
        &keys.row_key(&t, &row),
        &format!("72 | {MC_USERS} | 01 8000000000000001"),
        "row key",
    );
    let value = encode_row(&row);
    assert_bytes(&value, "03 | 04 02 | 07 03 614078 | 03 3c", "row value");
    assert_eq!(decode_row(&t, &value).unwrap(), row);
    // A nullable column holding NULL.
    assert_bytes(
        &encode_row(&user(2, "b@x", None)),
        "03 | 04 04 | 07 03 624078 | 00",
        "row value with NULL",
    );
    assert_bytes(
        &prefix_end(&keys.row).unwrap(),
        "72 | 01 7573657273 000000 06",
        "end of the table's rows",
    );
}

#[test]
fn non_unique_index_keys() {
    let t = users();
    let by_age = &t.indexes[1];
    let prefix = index_prefix(&t, by_age);
    assert_bytes(&prefix, &format!("69 | {MC_USERS} | {MC_BY_AGE}"), "prefix");
    let row = user(1, "a@x", Some(30));
    let pk = pk_suffix(&t, &row);
    assert_bytes(
        &index_key(&prefix, &t, by_age, &row, &pk),
        &format!("69 | {MC_USERS} | {MC_BY_AGE} | 01 8000001e | 01 8000000000000001"),
        "index key",
    );
    let row = user(2, "b@x", None);
    let pk = pk_suffix(&t, &row);
    assert_bytes(
        &index_key(&prefix, &t, by_age, &row, &pk),
        &format!("69 | {MC_USERS} | {MC_BY_AGE} | 00 | 01 8000000000000002"),
        "index key of NULL",
    );
}

#[test]
fn unique_index_keys() {
    let t = users();
    let by_email = &t.indexes[0];
    let prefix = index_prefix(&t, by_email);
    assert_bytes(
        &prefix,
        &format!("75 | {MC_USERS} | {MC_BY_EMAIL}"),
        "prefix",
    );
    let row = user(1, "a@x", Some(30));
    let pk = pk_suffix(&t, &row);
    assert_bytes(
        &index_key(&prefix, &t, by_email, &row, &pk),
        &format!("75 | {MC_USERS} | {MC_BY_EMAIL} | 01 01 614078 0000000000 03"),
        "unique key: the indexed values only",
    );
    // A unique index over a nullable column: a NULL appends the key suffix.
    let by_age_u = IndexDef {
        name: "u_age".into(),
        columns: vec![2],
        unique: true,
        when: None,
    };
    let prefix = index_prefix(&t, &by_age_u);
    let mc_u_age = "01 755f616765 000000 05";
    assert_bytes(
        &index_key(&prefix, &t, &by_age_u, &row, &pk),
        &format!("75 | {MC_USERS} | {mc_u_age} | 01 8000001e"),
        "unique key without NULL",
    );
    let row = user(2, "b@x", None);
    let pk = pk_suffix(&t, &row);
    assert_bytes(
        &index_key(&prefix, &t, &by_age_u, &row, &pk),
        &format!("75 | {MC_USERS} | {mc_u_age} | 00 | 01 8000000000000002"),
        "unique key with a NULL",
    );
}

const CATALOG_VALUE: &str = "05 7573657273 \
    03 | 02 6964 02 6964 03 00 | 05 656d61696c 05 656d61696c 06 00 | 03 616765 03 616765 02 01 \
    | 01 00 \
    | 03 | 08 62795f656d61696c 01 01 01 00 \
         | 06 62795f616765 01 02 00 00 \
         | 06 6d696e6f7273 01 02 00 01 03 02 00 02 02 03 24 \
    | 00";

/// Every entry in the store, as hex pairs.
async fn dump(kv: &MemKv) -> Vec<(String, String)> {
    let mut t = kv
        .begin(TxOptions {
            isolation: None,
            read_only: true,
        })
        .await
        .unwrap();
    t.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX, false)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (hex(&k), hex(&v)))
        .collect()
}

fn entries(list: &[(String, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (h(k), h(v))).collect()
}

/// What `KvEngine` writes for registered tables and rows (catalog, rows, every kind of
/// index entry), entry by entry.
#[tokio::test]
async fn engine_writes_exactly_these_entries() {
    let t = users();
    let kv = MemKv::new();
    let engine = KvEngine::new(kv.clone());
    engine.register(&[&t], &[]).await.unwrap();
    engine
        .run(Op::Insert {
            table: &t,
            rows: vec![
                user(1, "a@x", Some(30)),
                user(2, "b@x", None),
                user(3, "c@x", Some(7)),
            ],
            mode: WriteMode::Insert,
        })
        .await
        .unwrap();

    let u = MC_USERS;
    let (by_email, by_age) = (MC_BY_EMAIL, MC_BY_AGE);
    let minors = "01 6d696e6f7273 0000 06";
    let pk = |i: u8| format!("01 80000000000000{i:02x}");
    let catalog = (format!("63 | {u}"), CATALOG_VALUE);
    // The open epoch: one `register` so far.
    let epoch = ("65".to_string(), "0000000000000001");
    let mut want = vec![
        catalog.clone(),
        epoch.clone(),
        (
            format!("69 | {u} | {by_age} | 00 | {}", pk(2)),
            "01 8000000000000002",
        ),
        (
            format!("69 | {u} | {by_age} | 01 80000007 | {}", pk(3)),
            "01 8000000000000003",
        ),
        (
            format!("69 | {u} | {by_age} | 01 8000001e | {}", pk(1)),
            "01 8000000000000001",
        ),
        (
            format!("69 | {u} | {minors} | 01 80000007 | {}", pk(3)),
            "01 8000000000000003",
        ),
        (
            format!("72 | {u} | {}", pk(1)),
            "03 0402 07 03 614078 03 3c",
        ),
        (format!("72 | {u} | {}", pk(2)), "03 0404 07 03 624078 00"),
        (
            format!("72 | {u} | {}", pk(3)),
            "03 0406 07 03 634078 03 0e",
        ),
        (
            format!("75 | {u} | {by_email} | 01 01 614078 0000000000 03"),
            "01 8000000000000001",
        ),
        (
            format!("75 | {u} | {by_email} | 01 01 624078 0000000000 03"),
            "01 8000000000000002",
        ),
        (
            format!("75 | {u} | {by_email} | 01 01 634078 0000000000 03"),
            "01 8000000000000003",
        ),
    ];
    assert_eq!(dump(&kv).await, entries(&want), "after three inserts");

    // Row 3 leaves the conditional index (age 7 → 20) and moves in by_age; row 2 goes.
    engine
        .run(Op::Update {
            table: &t,
            rows: vec![user(3, "c@x", Some(20))],
        })
        .await
        .unwrap();
    engine
        .run(Op::Delete {
            table: &t,
            keys: vec![vec![Value::I64(2)]],
        })
        .await
        .unwrap();
    want = vec![
        catalog,
        epoch,
        (
            format!("69 | {u} | {by_age} | 01 80000014 | {}", pk(3)),
            "01 8000000000000003",
        ),
        (
            format!("69 | {u} | {by_age} | 01 8000001e | {}", pk(1)),
            "01 8000000000000001",
        ),
        (
            format!("72 | {u} | {}", pk(1)),
            "03 0402 07 03 614078 03 3c",
        ),
        (
            format!("72 | {u} | {}", pk(3)),
            "03 0406 07 03 634078 03 28",
        ),
        (
            format!("75 | {u} | {by_email} | 01 01 614078 0000000000 03"),
            "01 8000000000000001",
        ),
        (
            format!("75 | {u} | {by_email} | 01 01 634078 0000000000 03"),
            "01 8000000000000003",
        ),
    ];
    assert_eq!(
        dump(&kv).await,
        entries(&want),
        "after an update and a delete"
    );
}

/// Change capture: the flag, the sequence and the change records, byte by byte.
#[tokio::test]
async fn change_capture_bytes() {
    assert_eq!(codec::CAPTURE, b'f');
    assert_eq!(codec::CHANGE_SEQ, b's');
    assert_eq!(codec::CHANGE, b'h');
    let t = users();
    let kv = MemKv::new();
    let engine = KvEngine::new(kv.clone());
    engine.register(&[&t], &[]).await.unwrap();
    engine.enable_changes("users").await.unwrap();
    let row = user(1, "a@x", Some(30));
    engine
        .run(Op::Insert {
            table: &t,
            rows: vec![row.clone()],
            mode: WriteMode::Insert,
        })
        .await
        .unwrap();
    engine
        .run(Op::Delete {
            table: &t,
            keys: vec![vec![Value::I64(1)]],
        })
        .await
        .unwrap();
    let got: Vec<(String, String)> = dump(&kv)
        .await
        .into_iter()
        .filter(|(k, _)| k.starts_with("66") || k.starts_with("68") || k.starts_with("73"))
        .collect();
    let u = MC_USERS;
    let image = hex(&encode_row(&row));
    let want = entries(&[
        (format!("66 | {u}"), ""),
        (
            format!("68 | {u} | 0000000000000001"),
            &format!("00 | {image}"),
        ),
        (
            format!("68 | {u} | 0000000000000002"),
            &format!("02 | {image}"),
        ),
        (format!("73 | {u}"), "0000000000000002"),
    ]);
    assert_eq!(got, want);
    assert_bytes(
        &codec::change_key("users", 258),
        &format!("68 | {u} | 0000000000000102"),
        "change key",
    );

    // A second open (register) starts open epoch 1: positions jump to 2^40.
    assert_eq!(codec::EPOCH, b'e');
    let engine = KvEngine::new(kv.clone());
    engine.register(&[&t], &[]).await.unwrap();
    engine
        .run(Op::Insert {
            table: &t,
            rows: vec![row.clone()],
            mode: WriteMode::Insert,
        })
        .await
        .unwrap();
    let got: Vec<(String, String)> = dump(&kv)
        .await
        .into_iter()
        .filter(|(k, _)| k.starts_with("65") || k.starts_with("73"))
        .collect();
    let want = entries(&[
        ("65".to_string(), "0000000000000002"),
        (format!("73 | {u}"), "0000010000000000"),
    ]);
    assert_eq!(got, want, "after a second open");
}
