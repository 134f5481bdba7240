//! Decoding `model` blocks against the kinds the cluster's worker binary offers: the label
//! must name one of its kinds, each attribute must be one the kind's schema lists, of its
//! type, and required ones must be set; then the binary itself checks the model against the
//! dataset's shape (a CNN's pooling, `inputs` against the features) and says what it costs.

use std::path::{Path, PathBuf};

use hcl::edit::Span;
use hcl::edit::structure::{Block, Structure};
use kiln_proto::models::{AttrType, Catalog, CheckReport, CheckRequest, KindSchema};
use serde_json::{Map, Value as Json};

use crate::spec::{ClusterSpec, ModelSpec};

use super::dataset::DecodedDataset;
use super::getters::{Get, expect_bool, expect_int, expect_number, expect_string};
use super::hints::one_of_hint;
use super::schema::{MODEL, Schema};
use super::scope::Loader;
use super::source::{SourceFile, header_span, value_span};

/// A decoded `model` block, with what the later checks point at.
pub(super) struct DecodedModel<'b> {
    pub(super) spec: ModelSpec,
    pub(super) block: &'b Block,
}

/// Where a cluster's worker binary is, as messages name it.
pub(super) fn binary_name(binary: Option<&Path>) -> String {
    match binary {
        Some(path) => format!("`{}`", path.display()),
        None => "the bundled `kiln-worker`".to_owned(),
    }
}

impl<'d> Loader<'d> {
    /// The kinds of `cluster`'s worker binary, asked once per binary; `None` when there is
    /// no catalog to ask, or the binary could not answer (reported once, at `block`).
    fn kinds(&mut self, src: &SourceFile, block: &Block, cluster: &ClusterSpec) -> Option<Catalog> {
        let catalog = self.opts.catalog.clone()?;
        let binary = cluster.worker.binary.clone();
        if let Some(known) = self.catalogs.get(&binary) {
            return known.clone();
        }
        let answer = catalog.catalog(binary.as_deref());
        let known = match answer {
            Ok(kinds) => Some(kinds),
            Err(why) => {
                self.push(
                    src.error(
                        header_span(block),
                        format!(
                            "Cannot ask {} for its model kinds",
                            binary_name(binary.as_deref())
                        ),
                    )
                    .with_detail(format!(
                        "Cluster {:?} runs that worker binary: `kiln` asks it which models it trains (`models --json`). {why}",
                        cluster.name
                    ))
                    .with_hint("set `worker { binary = \"PATH\" }` in the cluster to a built worker binary"),
                );
                None
            }
        };
        self.catalogs.insert(binary, known.clone());
        known
    }

    /// Decodes a `model` block. Without a catalog the attributes are carried unchecked.
    pub(super) fn model<'b>(
        &mut self,
        src: &SourceFile,
        block: &'b Block,
        cluster: Option<&ClusterSpec>,
    ) -> Option<DecodedModel<'b>> {
        if !self.check_labels(src, block, &MODEL) {
            return None;
        }
        let kind = block.labels.first()?.as_str().to_owned();
        let Some(catalog) = cluster.and_then(|cluster| self.kinds(src, block, cluster)) else {
            let attributes = self.unchecked_attributes(src, block)?;
            return Some(DecodedModel {
                spec: ModelSpec { kind, attributes },
                block,
            });
        };
        let names: Vec<&str> = catalog.kinds.iter().map(|k| k.name.as_str()).collect();
        let Some(schema) = catalog.kind(&kind) else {
            let label_span = block.labels.first().and_then(|l| l.span());
            let binary = cluster.and_then(|c| c.worker.binary.as_deref());
            self.push(
                src.error(label_span, format!("Unknown model kind {kind:?}"))
                    .with_detail(format!(
                        "The model kinds are those the cluster's worker binary ({}) offers.",
                        binary_name(binary)
                    ))
                    .with_hint(one_of_hint(&kind, &names, "model kind")),
            );
            return None;
        };
        let attributes = self.schema_attributes(src, block, schema)?;
        Some(DecodedModel {
            spec: ModelSpec { kind, attributes },
            block,
        })
    }

    /// The block's attributes, each checked against `schema` (unknown ones with a
    /// did-you-mean, wrong types at the value, missing required ones at the header).
    fn schema_attributes(
        &mut self,
        src: &SourceFile,
        block: &Block,
        schema: &KindSchema,
    ) -> Option<Map<String, Json>> {
        let known: Vec<&str> = schema.attributes.iter().map(|a| a.name.as_str()).collect();
        let accepts = Schema {
            ident: MODEL.ident,
            labels: MODEL.labels,
            attrs: &[],
            blocks: &[],
        };
        self.check_names(src, &block.body, &accepts, &known);
        let mut ok = true;
        let mut out = Map::new();
        for attr in &schema.attributes {
            let body = &block.body;
            let got: Get<'_, Json> = match attr.ty {
                AttrType::Integer => self
                    .get(src, body, &attr.name, |v| expect_int(v, 0, u64::MAX))
                    .map(Json::from),
                AttrType::Number => self
                    .get(src, body, &attr.name, expect_number)
                    .map(Json::from),
                AttrType::Bool => self.get(src, body, &attr.name, expect_bool).map(Json::from),
                AttrType::String => self
                    .get(src, body, &attr.name, expect_string)
                    .map(Json::from),
                AttrType::IntegerList => self
                    .get_list(src, body, &attr.name, "whole numbers", |v| {
                        expect_int(v, 0, u64::MAX)
                    })
                    .map(Json::from),
                AttrType::NumberList => self
                    .get_list(src, body, &attr.name, "numbers", expect_number)
                    .map(Json::from),
            };
            let value = match (got, &attr.default) {
                (Get::Found(value, _), _) => value,
                (Get::Missing, Some(default)) => default.clone(),
                (Get::Missing, None) => {
                    let example = match attr.ty {
                        AttrType::IntegerList | AttrType::NumberList => "[16, 32]",
                        AttrType::Bool => "true",
                        AttrType::String => "\"…\"",
                        AttrType::Integer | AttrType::Number => "32",
                    };
                    let example = format!("{} = {example}", attr.name);
                    self.required::<()>(src, block, &attr.name, &example, Get::Missing);
                    ok = false;
                    continue;
                }
                (Get::Invalid, _) => {
                    ok = false;
                    continue;
                }
            };
            out.insert(attr.name.clone(), value);
        }
        ok.then_some(out)
    }

    /// The block's attributes as JSON, for a loader without a catalog.
    fn unchecked_attributes(
        &mut self,
        src: &SourceFile,
        block: &Block,
    ) -> Option<Map<String, Json>> {
        let mut out = Map::new();
        for structure in block.body.iter() {
            if let Structure::Attribute(attr) = structure {
                let value = self.eval(src, attr)?;
                // Every HCL value has a JSON form.
                let json = serde_json::to_value(&value).unwrap_or_default();
                out.insert(attr.key.as_str().to_owned(), json);
            }
        }
        Some(out)
    }

    /// Asks the worker binary whether the model can be built on the dataset's shape; a
    /// problem is reported at the attribute it names. `None` when the model is invalid.
    pub(super) fn check_model(
        &mut self,
        src: &SourceFile,
        model: &DecodedModel<'_>,
        dataset: &DecodedDataset,
        cluster: &ClusterSpec,
    ) -> Option<CheckReport> {
        let catalog = self.opts.catalog.clone()?;
        let binary: Option<PathBuf> = cluster.worker.binary.clone();
        if !matches!(self.catalogs.get(&binary), Some(Some(_))) {
            return None;
        }
        let request = CheckRequest {
            kind: model.spec.kind.clone(),
            attributes: model.spec.attributes.clone(),
            features: dataset.spec.features,
            classes: dataset.spec.classes,
        };
        let report = match catalog.check(binary.as_deref(), &request) {
            Ok(report) => report,
            Err(why) => {
                self.push(
                    src.error(
                        header_span(model.block),
                        format!(
                            "Cannot ask {} to check this model",
                            binary_name(binary.as_deref())
                        ),
                    )
                    .with_detail(why),
                );
                return None;
            }
        };
        let Some(problem) = &report.problem else {
            return Some(report);
        };
        let attr = problem
            .attribute
            .as_deref()
            .and_then(|name| model.block.body.get_attribute(name));
        let span = attr
            .and_then(value_span)
            .or_else(|| header_span(model.block));
        let mut diagnostic = src
            .error(span, problem.message.clone())
            .with_detail(format!(
                "The {}; the {}.",
                dataset.features_origin, dataset.classes_origin
            ));
        if let Some(hint) = &problem.hint {
            diagnostic = diagnostic.with_hint(hint.clone());
        }
        self.push(diagnostic);
        None
    }
}
