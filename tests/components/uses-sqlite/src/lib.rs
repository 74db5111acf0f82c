//! Imports Spin's SQLite interface, which kiosk-host does not provide: it
//! exists so `check` can be seen naming the missing interface.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::sqlite::Connection;

#[http_component]
fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    let connection = Connection::open_default()?;
    let rows = connection.execute("SELECT 1", &[])?;
    Ok(Response::new(200, format!("{} rows", rows.rows.len())))
}
