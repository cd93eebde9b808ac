//! Where things are in the lake: one place for the zone and table paths.

/// The zone the sink writes: one Delta table per event type.
pub const PSEUDONYMIZED: &str = "pseudonymized";
/// The zone releases write: `anonymized/<release_id>/<table>`.
pub const ANONYMIZED: &str = "anonymized";
/// Partition columns every lake table has, in this order.
pub const PARTITION_COLUMNS: [&str; 2] = ["prefecture", "event_month"];
/// Partition columns a lake may add after those (a fixed list: each
/// multiplies the number of files).
pub const EXTRA_PARTITION_COLUMNS: &[&str] =
    &["facility_type", "sex", "age_band", "residence_prefecture"];

/// A pseudonymized table's folder (`pseudonymized/diagnosis`).
pub fn table(table: &str) -> String {
    format!("{PSEUDONYMIZED}/{table}")
}

/// A release table's folder (`anonymized/<release_id>/<table>`).
pub fn release_table(release_id: &str, table: &str) -> String {
    format!("{ANONYMIZED}/{release_id}/{table}")
}

/// The app id of a Kafka partition's `txn` action in a table: the next
/// offset the sink group has landed from it. Never patient data: group,
/// topic and partition are configuration.
pub fn app_id(group: &str, topic: &str, partition: i32) -> String {
    format!("chitose-sink:{group}:{topic}:{partition}")
}
