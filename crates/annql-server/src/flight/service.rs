//! The Flight SQL service: arrow-flight's `FlightSqlService` calls, answered with annql
//! sessions ([`super::sessions`]), statements ([`super::statements`]) and catalog listings
//! ([`super::metadata`]).
//!
//! Results stream: each batch is encoded as the query's scans produce it, with dictionaries
//! resent beside the batches that use them (so categoricals arrive as dictionaries, where the
//! encoder's default would expand them), and gRPC's flow control holds the query back when the
//! client reads slowly. A call the client drops, a `CancelFlightInfo` or a `CancelQuery` stops
//! the query on the query runtime.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket as FlightTicket, decode::FlightRecordBatchStream,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::logical_expr::LogicalPlan;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::metadata::{self, Keys};
use super::sessions::{FlightSession, Sessions};
use super::statements::{self, Prepared, Ticket};
use super::status;
use crate::shared::Shared;

type DoGetStream = <AnnqlFlightSql as FlightService>::DoGetStream;
type DoActionStream = <AnnqlFlightSql as FlightService>::DoActionStream;

/// Rows of parameters a `DoPut` may send before it is refused (a query runs with one).
const MAX_PARAMETER_ROWS: usize = 1;
/// Batches a `DoPut` of parameters may send (empty ones included).
const MAX_PARAMETER_BATCHES: usize = 16;

/// annql's Flight SQL service.
#[derive(Debug)]
pub struct AnnqlFlightSql {
    shared: Arc<Shared>,
    sessions: Sessions,
}

impl AnnqlFlightSql {
    /// The service over a server's datasets.
    pub fn new(shared: Arc<Shared>) -> AnnqlFlightSql {
        AnnqlFlightSql {
            sessions: Sessions::new(shared.clone()),
            shared,
        }
    }

    fn session<T>(&self, request: &Request<T>) -> Result<Arc<FlightSession>, Status> {
        self.sessions.of(request.metadata())
    }

    /// Runs `plan` as the run `run` of `session`, streaming its batches.
    async fn execute(
        &self,
        session: Arc<FlightSession>,
        run: String,
        plan: LogicalPlan,
    ) -> Result<Response<DoGetStream>, Status> {
        let token = session.start(&run);
        let guard = Running { session, run };
        let ctx = guard.session.session.execution_context(&plan);
        let started = self.shared.queries.execute(ctx, plan);
        let batches = tokio::select! {
            r = started => r.map_err(|e| status::from_error(&e))?,
            _ = token.cancelled() => return Err(status::cancelled()),
        };
        let schema = batches.schema();
        let guarded = stream::unfold(Some((batches, token, guard)), |state| async move {
            let (mut batches, token, guard) = state?;
            tokio::select! {
                biased;
                _ = token.cancelled() => Some((Err(flight_error(status::cancelled())), None)),
                next = batches.next() => match next {
                    Some(Ok(b)) => Some((Ok(b), Some((batches, token, guard)))),
                    Some(Err(e)) => Some((Err(flight_error(status::from_error(&e))), None)),
                    None => None,
                },
            }
        });
        Ok(Response::new(encode(schema, guarded)))
    }

    /// The plan a statement ticket stands for.
    async fn ticket_plan(
        &self,
        session: &FlightSession,
        ticket: &Ticket,
    ) -> Result<LogicalPlan, Status> {
        match ticket {
            Ticket::Query { sql, .. } => {
                statements::plan(&self.shared, &session.session, sql).await
            }
            Ticket::Prepared { handle, .. } => session.prepared(handle.as_bytes())?.bound_plan(),
        }
    }

    /// The `FlightInfo` of a catalog call answered with `schema`: the command itself is the
    /// ticket (`DoGet` dispatches on it).
    fn command_info(
        &self,
        schema: &Schema,
        command: Any,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        info(schema, command.encode_to_vec(), request.into_inner())
    }

    /// Stops the runs a `FlightInfo` handed out; whether any was running.
    fn cancel_info(&self, session: &FlightSession, info: &FlightInfo) -> Result<bool, Status> {
        let mut any = false;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            let message = Any::decode(&*ticket.ticket)
                .map_err(|e| Status::invalid_argument(format!("not a ticket: {e}")))?;
            let Some(query) = message
                .unpack::<TicketStatementQuery>()
                .map_err(|e| Status::invalid_argument(e.to_string()))?
            else {
                continue;
            };
            let ticket = Ticket::decode(&query.statement_handle)?;
            any |= session.cancel(ticket.run());
        }
        Ok(any)
    }
}

/// A run in progress: unregistered when its stream is dropped (ended, failed or abandoned).
struct Running {
    session: Arc<FlightSession>,
    run: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.session.finish(&self.run);
    }
}

fn flight_error(s: Status) -> FlightError {
    FlightError::Tonic(Box::new(s))
}

/// Batches as Flight data, dictionaries kept (resent with each batch that uses them).
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> DoGetStream {
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_dictionary_handling(DictionaryHandling::Resend)
            .build(batches)
            .map_err(Status::from),
    )
}

/// One batch as a `DoGet` answer.
fn one_batch(batch: RecordBatch) -> Response<DoGetStream> {
    Response::new(encode(batch.schema(), stream::iter([Ok(batch)])))
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket`.
fn info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(FlightTicket {
        ticket: ticket.into(),
    });
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| status::from_error(&e))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| status::from_error(&e))?;
    Ok(bytes)
}

/// One action result.
fn action_result(body: Vec<u8>) -> Response<DoActionStream> {
    let result = arrow_flight::Result { body: body.into() };
    Response::new(Box::pin(stream::iter([Ok(result)])))
}

#[tonic::async_trait]
impl FlightSqlService for AnnqlFlightSql {
    type FlightService = AnnqlFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = self.sessions.handshake(request.metadata())?;
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| Status::internal(format!("a token header: {e}")))?;
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(stream::iter([Ok(answer)])));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let plan = statements::plan(&self.shared, &session.session, &query.query).await?;
        let ticket = Ticket::query(&query.query)?;
        info(
            plan.schema().as_arrow(),
            ticket.encode(),
            request.into_inner(),
        )
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let prepared = session.prepared(&query.prepared_statement_handle)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        let ticket = Ticket::prepared(&handle)?;
        info(
            prepared.plan.schema().as_arrow(),
            ticket.encode(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        let ticket = Ticket::decode(&ticket.statement_handle)?;
        let plan = self.ticket_plan(&session, &ticket).await?;
        self.execute(session, ticket.run().to_string(), plan).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        let ticket = Ticket::prepared(&handle)?;
        let plan = self.ticket_plan(&session, &ticket).await?;
        self.execute(session, ticket.run().to_string(), plan).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(&schema, query.as_any(), request)
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        Ok(one_batch(metadata::catalogs()?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&schema, query.as_any(), request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::db_schemas(&session.session, query.into_builder())?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&schema, query.as_any(), request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::tables(&session.session, query.into_builder()).await?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(&schema, query.as_any(), request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        let mut builder = query.into_builder();
        for t in metadata::TABLE_TYPES {
            builder.append(t);
        }
        let batch = builder.build().map_err(|e| status::from_error(&e))?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(metadata::sql_info()?).schema();
        self.command_info(&schema, query.as_any(), request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        let batch = query
            .into_builder(metadata::sql_info()?)
            .build()
            .map_err(|e| status::from_error(&e))?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(metadata::type_info()?).schema();
        self.command_info(&schema, query.as_any(), request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        let batch = query
            .into_builder(metadata::type_info()?)
            .build()
            .map_err(|e| status::from_error(&e))?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(
            &metadata::keys(Keys::Primary).schema(),
            query.as_any(),
            request,
        )
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        Ok(one_batch(metadata::keys(Keys::Primary)))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(
            &metadata::keys(Keys::Foreign).schema(),
            query.as_any(),
            request,
        )
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        Ok(one_batch(metadata::keys(Keys::Foreign)))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(
            &metadata::keys(Keys::Foreign).schema(),
            query.as_any(),
            request,
        )
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        Ok(one_batch(metadata::keys(Keys::Foreign)))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(
            &metadata::keys(Keys::Foreign).schema(),
            query.as_any(),
            request,
        )
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<FlightTicket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.session(&request)?;
        Ok(one_batch(metadata::keys(Keys::Foreign)))
    }

    async fn do_put_statement_update(
        &self,
        _query: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.session(&request)?;
        Err(status::read_only("updates"))
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let session = self.session(&request)?;
        let prepared = session.prepared(&query.prepared_statement_handle)?;
        let mut parameters = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        let mut batches = Vec::new();
        let mut rows = 0;
        while let Some(batch) = parameters.next().await {
            let batch = batch.map_err(Status::from)?;
            rows += batch.num_rows();
            batches.push(batch);
            // Enough to refuse (Prepared::bind says why); empty batches are not kept forever.
            if rows > MAX_PARAMETER_ROWS || batches.len() > MAX_PARAMETER_BATCHES {
                break;
            }
        }
        if rows <= MAX_PARAMETER_ROWS && batches.len() > MAX_PARAMETER_BATCHES {
            return Err(Status::invalid_argument(format!(
                "more than {MAX_PARAMETER_BATCHES} batches of parameters"
            )));
        }
        prepared.bind(&batches)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = self.session(&request)?;
        let plan = statements::plan(&self.shared, &session.session, &query.query).await?;
        let prepared = Prepared::new(plan)?;
        let dataset_schema = schema_bytes(prepared.plan.schema().as_arrow())?;
        let parameter_schema = schema_bytes(&prepared.parameter_schema())?;
        let handle = session.keep(prepared)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let session = self.session(&request)?;
        session.close(&query.prepared_statement_handle);
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let session = self.session(&request)?;
        let info = FlightInfo::decode(&*query.info)
            .map_err(|e| Status::invalid_argument(format!("not a FlightInfo: {e}")))?;
        // `ActionCancelQueryResult.CancelResult` (arrow-flight 59 does not export the enum):
        // CANCELLED = 1, NOT_CANCELLABLE = 3 (the run ended or never started).
        let result = if self.cancel_info(&session, &info)? {
            1
        } else {
            3
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<DoActionStream>, Status> {
        match request.get_ref().r#type.as_str() {
            "CancelFlightInfo" => {
                let session = self.session(&request)?;
                let cancel =
                    CancelFlightInfoRequest::decode(&*request.get_ref().body).map_err(|e| {
                        Status::invalid_argument(format!("not a CancelFlightInfoRequest: {e}"))
                    })?;
                let info = cancel.info.ok_or_else(|| {
                    Status::invalid_argument("CancelFlightInfo without a FlightInfo")
                })?;
                let status = if self.cancel_info(&session, &info)? {
                    CancelStatus::Cancelled
                } else {
                    CancelStatus::NotCancellable
                };
                let result = CancelFlightInfoResult {
                    status: status as i32,
                };
                Ok(action_result(result.encode_to_vec()))
            }
            "CloseSession" => {
                self.sessions.close(request.metadata())?;
                // A CloseSessionResult with status CLOSED (field 1, varint 1): arrow-flight 59
                // has no type for it.
                Ok(action_result(vec![0x08, 0x01]))
            }
            other => Err(Status::unimplemented(format!(
                "action {other:?} is not supported"
            ))),
        }
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {
        // The server's SqlInfo is fixed (metadata::SQL_INFO).
    }
}
