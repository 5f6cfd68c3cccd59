//! The Postgres log's writes that several operations share: publishing to the outbox, and
//! restarting a run under a transaction id whose earlier run may be replaced.

use super::*;

/// Writes events to the outbox with a delivery for each subscriber that takes them, and tells
/// listening nodes (the notification is sent when the transaction commits).
pub(super) async fn publish_in(tx: &mut sqlx::PgConnection, events: &[NewEvent]) -> Result<(), LogError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query("SELECT id, events FROM flow_subscriber")
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    let mut subscribers = Vec::with_capacity(rows.len());
    for r in rows {
        let names: Value = r.try_get("events").map_err(db)?;
        let names: Vec<String> = serde_json::from_value(names).unwrap_or_default();
        subscribers.push((r.try_get::<String, _>("id").map_err(db)?, names));
    }
    for e in events {
        let id = event_id();
        sqlx::query("INSERT INTO flow_event (id, name, data, metadata, created_at) VALUES ($1, $2, $3, $4, now())")
            .bind(&id)
            .bind(&e.name)
            .bind(&e.data)
            .bind(&e.metadata)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let takers: Vec<String> = takers(&subscribers, &e.name).into_iter().map(str::to_owned).collect();
        if !takers.is_empty() {
            sqlx::query(
                "INSERT INTO flow_delivery (event_id, subscriber, state, attempts, next_attempt_at)
                 SELECT $1, s, 'pending', 0, now() FROM unnest($2::text[]) AS s",
            )
            .bind(&id)
            .bind(&takers)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
    }
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Starts a finished run afresh under the same name: its steps forgotten, held by `owner`.
pub(super) async fn restart(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    workflow: &str,
    transaction_id: &str,
    input: &Value,
    owner: &str,
    lease: Duration,
) -> Result<(), LogError> {
    sqlx::query("DELETE FROM flow_step WHERE workflow = $1 AND transaction_id = $2")
        .bind(workflow)
        .bind(transaction_id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    sqlx::query(
        "UPDATE flow_run SET state = 'running', input = $3, result = NULL, errors = '[]', owner = $4,
             lease_until = clock_timestamp() + make_interval(secs => $5), created_at = now(), updated_at = now()
         WHERE workflow = $1 AND transaction_id = $2",
    )
    .bind(workflow)
    .bind(transaction_id)
    .bind(input)
    .bind(owner)
    .bind(seconds(lease))
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}
