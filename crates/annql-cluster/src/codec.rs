//! The extension codecs every process of a cluster installs (client, scheduler, executors): AnnData
//! tables travel as addresses ([`annql_engine::address`]), annql's operators as their parameters,
//! and everything else through Ballista's own codecs, which these wrap.
//!
//! annql's payloads start with [`MAGIC`] and a tag, then length-prefixed sections: a JSON
//! description, then protobuf blobs (physical expressions, a schema, a nested plan). Bytes
//! without the magic are Ballista's.

use std::sync::Arc;

use annql_engine::address::{StoreCache, TableAddress};
use annql_engine::fused::source::FusedMatrix;
use annql_engine::fused::{FusedAggregateExec, FusedSpec};
use annql_engine::provider::AnnDataTableProvider;
use annql_engine::{AnnDataScanExec, ScanParams};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::{
    AsExecutionPlan, PhysicalExtensionCodec, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{PhysicalExprNode, PhysicalPlanNode};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::slice::PartitionSliceExec;

/// The first bytes of every payload annql encodes.
pub const MAGIC: &[u8; 4] = b"AnQL";

/// What a payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    Table = 1,
    Scan = 2,
    Fused = 3,
    Slice = 4,
}

impl Tag {
    fn of(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Table,
            2 => Self::Scan,
            3 => Self::Fused,
            4 => Self::Slice,
            _ => return None,
        })
    }
}

/// Writes a payload: magic, tag, section count, then each section with its length.
fn frame(tag: Tag, json: &impl Serialize, blobs: &[Vec<u8>], buf: &mut Vec<u8>) -> Result<()> {
    let json = serde_json::to_vec(json).map_err(|e| DataFusionError::External(Box::new(e)))?;
    buf.extend_from_slice(MAGIC);
    buf.push(tag as u8);
    buf.extend_from_slice(&(1 + blobs.len() as u32).to_le_bytes());
    for section in std::iter::once(&json).chain(blobs) {
        buf.extend_from_slice(&(section.len() as u64).to_le_bytes());
        buf.extend_from_slice(section);
    }
    Ok(())
}

/// A payload read back: its tag and its sections (the description first).
type Payload<'a> = (Tag, Vec<&'a [u8]>);

/// A payload's tag and sections, or None for bytes that are not annql's.
fn unframe(buf: &[u8]) -> Result<Option<Payload<'_>>> {
    let Some(rest) = buf.strip_prefix(MAGIC.as_slice()) else {
        return Ok(None);
    };
    let bad = |what: &str| DataFusionError::Plan(format!("annql plan payload: {what}"));
    let (&tag, rest) = rest.split_first().ok_or_else(|| bad("no tag"))?;
    let tag = Tag::of(tag).ok_or_else(|| bad(&format!("unknown tag {tag}")))?;
    let (count, mut rest) = rest.split_at_checked(4).ok_or_else(|| bad("truncated"))?;
    let count = u32::from_le_bytes(count.try_into().map_err(|_| bad("truncated"))?) as usize;
    // Each section takes at least its 8-byte length: a count beyond that is a damaged payload,
    // not an allocation to make.
    if count > rest.len() / 8 + 1 {
        return Err(bad("section count beyond the payload"));
    }
    let mut sections = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, tail) = rest.split_at_checked(8).ok_or_else(|| bad("truncated"))?;
        let len = u64::from_le_bytes(len.try_into().map_err(|_| bad("truncated"))?);
        let len = usize::try_from(len).map_err(|_| bad("section too long"))?;
        let (section, tail) = tail.split_at_checked(len).ok_or_else(|| bad("truncated"))?;
        sections.push(section);
        rest = tail;
    }
    if sections.is_empty() {
        return Err(bad("no description"));
    }
    Ok(Some((tag, sections)))
}

fn json<T: for<'de> Deserialize<'de>>(section: &[u8]) -> Result<T> {
    serde_json::from_slice(section).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// A scan's parameters.
#[derive(Serialize, Deserialize)]
struct ScanWire {
    address: TableAddress,
    projection: Vec<usize>,
    partitions: Vec<Vec<(u64, u64)>>,
    limit: Option<usize>,
}

/// A fused aggregation's parameters (its obs and var sides are its inputs).
#[derive(Serialize, Deserialize)]
struct FusedWire {
    spec: FusedSpec,
    address: TableAddress,
    obs: bool,
    var: bool,
}

/// Which partition of its inner plan a slice runs.
#[derive(Serialize, Deserialize)]
struct SliceWire {
    partition: usize,
}

/// Encodes AnnData tables as addresses; anything else as Ballista does.
#[derive(Debug)]
pub struct AnnLogicalCodec {
    inner: BallistaLogicalExtensionCodec,
    stores: Arc<StoreCache>,
}

impl AnnLogicalCodec {
    /// A codec opening decoded tables through `stores`.
    pub fn new(stores: Arc<StoreCache>) -> Self {
        Self {
            inner: BallistaLogicalExtensionCodec::default(),
            stores,
        }
    }
}

impl LogicalExtensionCodec for AnnLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let Some((tag, sections)) = unframe(buf)? else {
            return self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        if tag != Tag::Table {
            return Err(DataFusionError::Plan(format!(
                "annql plan payload for {table_ref}: expected a table, got {tag:?}"
            )));
        }
        let address: TableAddress = json(sections[0])?;
        let provider = self.stores.provider(&address)?;
        // The client planned against the store as it saw it; a store changed since (or another
        // file at the same path) is refused, not read with the wrong columns.
        if provider.schema().fields() != schema.fields() {
            return Err(DataFusionError::Plan(format!(
                "{table_ref} ({}): the table's columns here differ from the client's (is the \
                 same store at that path on every machine?)",
                address.location
            )));
        }
        Ok(provider)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        match node.downcast_ref::<AnnDataTableProvider>() {
            Some(p) => frame(Tag::Table, &p.address()?, &[], buf),
            None => self.inner.try_encode_table_provider(table_ref, node, buf),
        }
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }
}

/// Encodes annql's operators by their parameters; anything else as Ballista does.
#[derive(Debug)]
pub struct AnnPhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
    stores: Arc<StoreCache>,
}

impl AnnPhysicalCodec {
    /// A codec opening decoded tables through `stores`.
    pub fn new(stores: Arc<StoreCache>) -> Self {
        Self {
            inner: BallistaPhysicalExtensionCodec::default(),
            stores,
        }
    }

    fn exprs(&self, exprs: &[Arc<dyn PhysicalExpr>]) -> Result<Vec<Vec<u8>>> {
        exprs
            .iter()
            .map(|e| Ok(serialize_physical_expr(e, self)?.encode_to_vec()))
            .collect()
    }

    fn parse_exprs(
        &self,
        blobs: &[&[u8]],
        ctx: &TaskContext,
        schema: &Schema,
    ) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        blobs
            .iter()
            .map(|b| {
                let node = PhysicalExprNode::decode(*b)
                    .map_err(|e| DataFusionError::Plan(format!("annql filter payload: {e}")))?;
                parse_physical_expr(&node, ctx, schema, self)
            })
            .collect()
    }

    fn encode_scan(&self, scan: &AnnDataScanExec, buf: &mut Vec<u8>) -> Result<()> {
        let params = scan.params();
        let wire = ScanWire {
            address: scan.address()?,
            projection: params.projection.clone(),
            partitions: params
                .partitions
                .iter()
                .map(|p| p.iter().map(|r| (r.start, r.end)).collect())
                .collect(),
            limit: params.limit,
        };
        // Dynamic filters are not shipped: they only prune rows the join drops anyway.
        frame(Tag::Scan, &wire, &self.exprs(scan.filters())?, buf)
    }

    fn decode_scan(&self, sections: &[&[u8]], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
        let wire: ScanWire = json(sections[0])?;
        let provider = self.stores.provider(&wire.address)?;
        let filters = self.parse_exprs(&sections[1..], ctx, &provider.schema())?;
        let params = ScanParams {
            projection: wire.projection,
            partitions: wire
                .partitions
                .into_iter()
                .map(|p| p.into_iter().map(|(a, b)| a..b).collect())
                .collect(),
            limit: wire.limit,
        };
        Ok(Arc::new(provider.scan_with(params, filters)?))
    }

    fn encode_fused(&self, fused: &FusedAggregateExec, buf: &mut Vec<u8>) -> Result<()> {
        let spec = fused.spec().clone();
        let wire = FusedWire {
            address: fused.matrix().address()?,
            obs: spec.obs_key.is_some(),
            var: spec.var_key.is_some(),
            spec,
        };
        let schema: datafusion_proto::protobuf::Schema = fused.schema().as_ref().try_into()?;
        let mut blobs = vec![schema.encode_to_vec()];
        blobs.extend(self.exprs(fused.matrix_filters())?);
        frame(Tag::Fused, &wire, &blobs, buf)
    }

    fn decode_fused(
        &self,
        sections: &[&[u8]],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wire: FusedWire = json(sections[0])?;
        let schema_blob = sections
            .get(1)
            .ok_or_else(|| DataFusionError::Plan("annql fused payload: no schema".into()))?;
        let schema = datafusion_proto::protobuf::Schema::decode(*schema_blob)
            .map_err(|e| DataFusionError::Plan(format!("annql fused payload: {e}")))?;
        let schema: Schema = (&schema).try_into()?;
        let provider = self.stores.provider(&wire.address)?;
        let filters = self.parse_exprs(&sections[2..], ctx, &provider.schema())?;
        let mut it = inputs.iter().cloned();
        let obs = if wire.obs { it.next() } else { None };
        let var = if wire.var { it.next() } else { None };
        if (wire.obs && obs.is_none()) || (wire.var && var.is_none()) {
            return Err(DataFusionError::Plan(
                "annql fused payload: an obs or var side is missing".into(),
            ));
        }
        Ok(Arc::new(FusedAggregateExec::try_new(
            wire.spec,
            FusedMatrix::of_provider(&provider),
            filters,
            obs,
            var,
            Arc::new(schema),
        )?))
    }
}

impl PhysicalExtensionCodec for AnnPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((tag, sections)) = unframe(buf)? else {
            return self.inner.try_decode(buf, inputs, ctx, proto_converter);
        };
        match tag {
            Tag::Scan => self.decode_scan(&sections, ctx),
            Tag::Fused => self.decode_fused(&sections, inputs, ctx),
            Tag::Slice => {
                let wire: SliceWire = json(sections[0])?;
                let blob = sections.get(1).ok_or_else(|| {
                    DataFusionError::Plan("annql slice payload: no inner plan".into())
                })?;
                let node = PhysicalPlanNode::decode(*blob)
                    .map_err(|e| DataFusionError::Plan(format!("annql slice payload: {e}")))?;
                let inner = node.try_into_physical_plan(ctx, self)?;
                let gate = inputs.first().cloned().ok_or_else(|| {
                    DataFusionError::Plan("annql slice payload: no gate input".into())
                })?;
                Ok(Arc::new(PartitionSliceExec::try_new(
                    inner,
                    wire.partition,
                    gate,
                )?))
            }
            Tag::Table => Err(DataFusionError::Plan(
                "annql plan payload: a table where an operator was expected".into(),
            )),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(scan) = node.downcast_ref::<AnnDataScanExec>() {
            return self.encode_scan(scan, buf);
        }
        if let Some(fused) = node.downcast_ref::<FusedAggregateExec>() {
            return self.encode_fused(fused, buf);
        }
        if let Some(slice) = node.downcast_ref::<PartitionSliceExec>() {
            let inner = PhysicalPlanNode::try_from_physical_plan(slice.inner().clone(), self)?;
            let wire = SliceWire {
                partition: slice.partition(),
            };
            return frame(Tag::Slice, &wire, &[inner.encode_to_vec()], buf);
        }
        self.inner.try_encode(node, buf, proto_converter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_damaged_ones_are_refused() {
        let mut buf = Vec::new();
        frame(
            Tag::Slice,
            &SliceWire { partition: 3 },
            &[vec![1, 2, 3]],
            &mut buf,
        )
        .expect("frame");
        let (tag, sections) = unframe(&buf).expect("unframe").expect("annql's");
        assert_eq!(tag, Tag::Slice);
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[1], &[1, 2, 3]);
        let wire: SliceWire = json(sections[0]).expect("json");
        assert_eq!(wire.partition, 3);
        assert!(unframe(b"not ours").expect("foreign").is_none());
        for cut in [5, 8, 12, buf.len() - 1] {
            unframe(&buf[..cut]).expect_err("truncated");
        }
        let mut huge = MAGIC.to_vec();
        huge.push(1);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        unframe(&huge).expect_err("a count beyond the payload");
    }
}
