//! `GET /api/tables…`: list and get over every projection table.

use std::collections::HashMap;
use std::time::Duration;

use crate::params::Params;
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::json;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use vibehq_projector::query::{self, Filter, Page, TABLES};
use vibehq_projector::{Handle, NotThrough, Reader, Table};

use crate::AppState;
use crate::error::{ApiError, error_response};

/// How long a query given `min_seq` waits for the projector to get there.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);

/// A table and how it can be queried.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableInfo {
    pub name: &'static str,
    /// The column `GET /api/tables/{table}/{key}` looks up.
    pub key: &'static str,
    /// The status column and its values, where the table has one.
    pub status_column: Option<&'static str>,
    pub statuses: Vec<&'static str>,
    /// The column `since`/`until` filter on (unix seconds).
    pub time_column: &'static str,
    /// Further columns accepted as equality filters.
    pub filters: Vec<&'static str>,
}

/// One page of rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowsPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Map<String, Value>>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<i64>,
}

impl From<Page> for RowsPage {
    fn from(page: Page) -> Self {
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

/// The queryable tables.
#[utoipa::path(get, path = "/api/tables", tag = "projections",
    responses((status = 200, body = Vec<TableInfo>)))]
pub async fn index() -> Json<Vec<TableInfo>> {
    Json(
        TABLES
            .iter()
            .map(|t| TableInfo {
                name: t.name,
                key: t.key,
                status_column: t.status.map(|(c, _)| c),
                statuses: t.status.map(|(_, v)| v.to_vec()).unwrap_or_default(),
                time_column: t.time,
                filters: t.filters.to_vec(),
            })
            .collect(),
    )
}

/// Lists a table's rows, oldest first (or newest with `order=desc`), filtered and paginated.
/// The document gives each table its own path (see [`TablePaths`]): its filters differ.
pub async fn list(
    State(state): State<AppState>,
    Path(table): Path<String>,
    Params(params): Params,
) -> Result<Json<RowsPage>, ApiError> {
    let table = lookup(&table)?;
    Ok(Json(
        list_rows(&state.reader, &state.projector, table, params).await?,
    ))
}

/// Lists `table`'s rows for a list endpoint's query parameters (filters, pagination,
/// `min_seq`); every list endpoint over a projection table goes through here.
pub async fn list_rows(
    reader: &Reader,
    projector: &Handle,
    table: &'static Table,
    params: HashMap<String, String>,
) -> Result<RowsPage, ApiError> {
    let (filter, min_seq) = parse_filter(table, params)?;
    wait_for(projector, table, min_seq).await?;
    let page = reader
        .read(move |conn| query::list(conn, table, &filter))
        .await?;
    Ok(page.into())
}

/// The row of `table` with this key, after waiting for `min_seq` if the parameters give one
/// (no other parameter is accepted).
pub async fn get_row(
    reader: &Reader,
    projector: &Handle,
    table: &'static Table,
    key: &str,
    params: HashMap<String, String>,
) -> Result<Option<Map<String, Value>>, ApiError> {
    let mut min_seq = None;
    for (name, value) in params {
        match name.as_str() {
            "min_seq" => min_seq = Some(parse_number(&name, &value)?),
            _ => return Err(unknown_param(table, &name)),
        }
    }
    wait_for(projector, table, min_seq).await?;
    let key = key.to_owned();
    Ok(reader
        .read(move |conn| query::get(conn, table, &key))
        .await?)
}

/// One row of a table, by the table's key column (documented per table by [`TablePaths`]).
pub async fn get(
    State(state): State<AppState>,
    Path((table, key)): Path<(String, String)>,
    Params(params): Params,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let table = lookup(&table)?;
    let row = get_row(&state.reader, &state.projector, table, &key, params).await?;
    row.map(Json).ok_or_else(|| {
        ApiError::not_found(
            "key",
            format!("{} has no row with {} = {key:?}", table.name, table.key),
        )
    })
}

fn lookup(name: &str) -> Result<&'static Table, ApiError> {
    Table::named(name).ok_or_else(|| {
        let names: Vec<_> = TABLES.iter().map(|t| t.name).collect();
        ApiError::not_found(
            "table",
            format!("no table {name:?}; tables are {}", names.join(", ")),
        )
    })
}

/// Waits (up to 5 s) for `table`'s stream to be projected through `min_seq`, if given.
async fn wait_for(
    projector: &vibehq_projector::Handle,
    table: &Table,
    min_seq: Option<u64>,
) -> Result<(), ApiError> {
    let (Some(sequence), Some(stream)) = (min_seq, table.stream) else {
        return Ok(());
    };
    match projector
        .read_through(stream, sequence, READ_YOUR_WRITES_WAIT)
        .await
    {
        Ok(()) => Ok(()),
        Err(NotThrough::Ahead { last }) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "min_seq_ahead",
            format!(
                "the {stream} stream has not reached sequence {sequence} (its last is {last}): \
                 pass the sequence a write answered with"
            ),
            Some("min_seq".into()),
        )),
        Err(NotThrough::TimedOut) => Err(ApiError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "not_yet_projected",
            format!(
                "the {stream} projection has not reached sequence {sequence} within {} s",
                READ_YOUR_WRITES_WAIT.as_secs()
            ),
            Some("min_seq".into()),
        )),
    }
}

/// Parses list query parameters, naming the offending one on error. Unknown parameters are
/// refused rather than ignored: a misspelt filter would otherwise silently return everything.
fn parse_filter(
    table: &'static Table,
    params: HashMap<String, String>,
) -> Result<(Filter, Option<u64>), ApiError> {
    let mut filter = Filter {
        limit: 100,
        ..Filter::default()
    };
    let mut min_seq = None;
    for (name, value) in params {
        match name.as_str() {
            "worker_name" if table.has_worker() => filter.worker_name = Some(value),
            "container_name" if table.has_worker() => filter.container_name = Some(value),
            "status" if table.status.is_some() => {
                if !table.allows_status(&value) {
                    let allowed = table.status.map(|(_, v)| v.join(", ")).unwrap_or_default();
                    return Err(ApiError::invalid(
                        "status",
                        format!(
                            "{value:?} is not a {} status; use one of {allowed}",
                            table.name
                        ),
                    ));
                }
                filter.status = Some(value);
            }
            "since" => filter.since = Some(parse_time(&name, &value)?),
            "until" => filter.until = Some(parse_time(&name, &value)?),
            "order" => {
                filter.descending = match value.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(ApiError::invalid("order", "order must be `asc` or `desc`")),
                }
            }
            "cursor" => {
                let cursor: u64 = parse_number(&name, &value)?;
                filter.cursor = Some(i64::try_from(cursor).unwrap_or(i64::MAX));
            }
            "limit" => {
                let limit: u32 = parse_number(&name, &value)?;
                if !(1..=1000).contains(&limit) {
                    return Err(ApiError::invalid(
                        "limit",
                        "limit must be between 1 and 1000",
                    ));
                }
                filter.limit = limit;
            }
            "min_seq" => min_seq = Some(parse_number(&name, &value)?),
            other => match table.filters.iter().find(|f| **f == other) {
                Some(column) if table.flags.contains(column) => {
                    let flag = match value.as_str() {
                        "true" | "1" => "1",
                        "false" | "0" => "0",
                        _ => {
                            return Err(ApiError::invalid(
                                other.to_owned(),
                                format!("{other} is true or false, not {value:?}"),
                            ));
                        }
                    };
                    filter.columns.push((column, flag.to_owned()));
                }
                Some(column) => filter.columns.push((column, value)),
                None => return Err(unknown_param(table, other)),
            },
        }
    }
    Ok((filter, min_seq))
}

fn unknown_param(table: &Table, name: &str) -> ApiError {
    ApiError::invalid(
        name,
        format!(
            "{name:?} is not a filter of {}; see GET /api/tables for what each table accepts",
            table.name
        ),
    )
}

fn parse_number<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| {
        ApiError::invalid(
            field,
            format!("{field} must be a non-negative integer, not {value:?}"),
        )
    })
}

fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(seconds) = value.parse::<i64>() {
        return Ok(seconds);
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            ApiError::invalid(
                field,
                format!(
                    "{field} must be RFC 3339 (2026-11-26T10:00:00Z) or unix seconds, not {value:?}"
                ),
            )
        })
}

/// A query parameter of a list, as the document gives it.
fn query_param(name: &str, schema: Value, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(crate::schema::from_json(&schema)))
        .build()
}

/// A moment, as `since` and `until` take it: RFC 3339 or unix seconds.
fn instant() -> Value {
    json!({"anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}
    ]})
}

/// The `min_seq` parameter of a read over `table`'s stream.
fn min_seq_param(table: &Table) -> Option<Parameter> {
    let stream = table.stream?;
    Some(query_param(
        "min_seq",
        json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        &format!(
            "Wait (up to 5 s) until the projection has applied this {stream} stream sequence: \
             read your own writes. A sequence the stream has not reached is a 409"
        ),
    ))
}

/// The query parameters a list of `table` takes, as [`parse_filter`] reads them; `filters`
/// narrows them to the ones an endpoint accepts (every one, for `/api/tables/{table}`).
pub fn list_parameters(table: &Table, filters: Option<&[&str]>) -> Vec<Parameter> {
    let takes = |name: &str| filters.is_none_or(|allowed| allowed.contains(&name));
    let mut params = Vec::new();
    let text = json!({"type": "string"});
    if table.has_worker() {
        for name in ["worker_name", "container_name"] {
            if takes(name) {
                params.push(query_param(
                    name,
                    text.clone(),
                    &format!("Rows with this {name}"),
                ));
            }
        }
    }
    if let Some((column, statuses)) = table.status
        && takes("status")
    {
        params.push(query_param(
            "status",
            json!({"type": "string", "enum": statuses}),
            &format!("Rows whose {column} is this"),
        ));
    }
    for (name, word) in [("since", "at or after"), ("until", "at or before")] {
        if takes(name) {
            params.push(query_param(
                name,
                instant(),
                &format!(
                    "Rows whose {} is {word} this: RFC 3339 or unix seconds",
                    table.time
                ),
            ));
        }
    }
    for &column in table.filters {
        if !takes(column) {
            continue;
        }
        let schema = if table.flags.contains(&column) {
            json!({"type": "string", "enum": ["true", "false", "1", "0"]})
        } else {
            text.clone()
        };
        params.push(query_param(
            column,
            schema,
            &format!("Rows with this {column}"),
        ));
    }
    let paging = [
        (
            "order",
            json!({"type": "string", "enum": ["asc", "desc"]}),
            "`asc` (oldest first, the default) or `desc`",
        ),
        (
            "cursor",
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
            "`next_cursor` of the previous page",
        ),
        (
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 1000}),
            "Page size (default 100)",
        ),
    ];
    for (name, schema, description) in paging {
        if takes(name) {
            params.push(query_param(name, schema, description));
        }
    }
    if takes("min_seq") {
        params.extend(min_seq_param(table));
    }
    params
}

/// The parameters a read of one row of `table` takes: `min_seq`, where it has a stream.
pub fn get_parameters(table: &Table) -> Vec<Parameter> {
    min_seq_param(table).into_iter().collect()
}

/// The answers every read of the projection may give besides its own: a wrong parameter,
/// a `min_seq` the stream has not reached, and a projection that did not reach it in time.
pub fn read_responses(operation: &mut utoipa::openapi::path::Operation) {
    let responses = &mut operation.responses.responses;
    for (status, description) in [
        (
            "400",
            "A query parameter is unknown or invalid; `field` names it",
        ),
        (
            "409",
            "`min_seq` names a sequence the stream has not reached (`min_seq_ahead`)",
        ),
        (
            "504",
            "The projection did not reach `min_seq` within 5 s (it is behind the stream)",
        ),
    ] {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error_response(description)));
    }
}

/// Gives the document a path for each table's list and row, with that table's own filters
/// and statuses (one templated `/api/tables/{table}` could not say which table takes what).
#[derive(Debug)]
pub struct TablePaths;

impl utoipa::Modify for TablePaths {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for table in TABLES {
            let mut list = OperationBuilder::new()
                .tag("projections")
                .operation_id(Some(format!("list_{}", table.name)))
                .summary(Some(format!(
                    "Lists {}, oldest first (or newest with order=desc), filtered and paginated",
                    table.name
                )))
                .parameters(Some(list_parameters(table, None)))
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("One page of rows")
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("RowsPage")))
                                .build(),
                        ),
                )
                .build();
            read_responses(&mut list);
            let key = ParameterBuilder::new()
                .name(table.key)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(format!("The row's {}", table.key)))
                .schema(Some(crate::schema::from_json(&json!({"type": "string"}))))
                .build();
            let mut one = OperationBuilder::new()
                .tag("projections")
                .operation_id(Some(format!("get_{}", table.name)))
                .summary(Some(format!(
                    "One row of {} by its {}",
                    table.name, table.key
                )))
                .parameters(Some(std::iter::once(key).chain(get_parameters(table))))
                .response(
                    "200",
                    ResponseBuilder::new().description("The row").content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(crate::schema::from_json(&json!({"type": "object"}))))
                            .build(),
                    ),
                )
                .response("404", error_response("No row has this key"))
                .build();
            read_responses(&mut one);
            doc.paths.paths.insert(
                format!("/api/tables/{}", table.name),
                PathItem::new(HttpMethod::Get, list),
            );
            doc.paths.paths.insert(
                format!("/api/tables/{}/{{{}}}", table.name, table.key),
                PathItem::new(HttpMethod::Get, one),
            );
        }
    }
}
