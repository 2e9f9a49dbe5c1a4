//! The AI gateway's figures for `/metrics`, from `ai_model_calls` (every attempt any process's
//! gateway made): calls, tokens and cost by provider, model and outcome; fallbacks; routing
//! decisions by tier; approvals waiting for a human.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::{Registry, Unit};
use vibehq_metrics::{Figures, FloatCounter, FloatGauge, ModelLabels, counters, rows};

#[derive(Debug, Clone, Copy, Default)]
pub struct AiFigures;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TierLabels {
    tier: String,
}

impl Figures for AiFigures {
    fn read(&self, conn: &rusqlite::Connection, registry: &mut Registry) -> rusqlite::Result<()> {
        let calls = rows(
            conn,
            "SELECT provider, model, outcome, COUNT(*), COALESCE(SUM(input_tokens), 0),
                    COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0.0)
             FROM ai_model_calls GROUP BY 1, 2, 3",
            |row| {
                let labels = ModelLabels {
                    provider: row.get(0)?,
                    model: row.get(1)?,
                    outcome: row.get(2)?,
                };
                Ok((
                    labels,
                    row.get::<_, i64>(3)? as f64,
                    row.get::<_, i64>(4)? as f64,
                    row.get::<_, i64>(5)? as f64,
                    row.get::<_, f64>(6)?,
                ))
            },
        )?;
        let tokens = calls.iter().flat_map(|(l, _, input, output, _)| {
            let of = |kind| TokenLabels {
                provider: l.provider.clone(),
                model: l.model.clone(),
                kind,
            };
            [(of("input"), *input), (of("output"), *output)]
        });
        registry.register(
            "ai_tokens",
            "Tokens used by model calls, by provider, model and kind (input, output)",
            counters(tokens.collect::<Vec<_>>()),
        );
        registry.register_with_unit(
            "ai_cost",
            "What model calls cost by the configured price table, by provider, model and outcome",
            Unit::Other("usd".into()),
            counters(calls.iter().map(|(l, _, _, _, cost)| (l.clone(), *cost))),
        );
        registry.register(
            "ai_model_calls",
            "Model call attempts (a fallback is one attempt per provider tried), by provider, model and outcome",
            counters(calls.into_iter().map(|(l, n, _, _, _)| (l, n))),
        );
        let fallbacks = FloatCounter::default();
        fallbacks.inc_by(count(
            conn,
            "SELECT COUNT(*) FROM ai_model_calls WHERE attempt > 1",
        )?);
        registry.register(
            "ai_fallbacks",
            "Attempts made after another provider failed the same call",
            fallbacks,
        );
        let tiers = rows(
            conn,
            "SELECT tier, COUNT(*) FROM ai_routing_decisions GROUP BY 1",
            |row| {
                Ok((
                    TierLabels { tier: row.get(0)? },
                    row.get::<_, i64>(1)? as f64,
                ))
            },
        )?;
        registry.register(
            "ai_routing_decisions",
            "Prompts routed by complexity, by the tier chosen",
            counters(tiers),
        );
        let waiting = FloatGauge::default();
        waiting.set(count(
            conn,
            "SELECT COUNT(*) FROM ai_tasks_hitl WHERE status = 'pending'",
        )?);
        registry.register(
            "ai_approvals_pending",
            "Plan steps waiting for a human's approval",
            waiting,
        );
        Ok(())
    }
}

/// The single number `sql` counts.
fn count(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<f64> {
    conn.prepare_cached(sql)?
        .query_row([], |row| row.get::<_, i64>(0))
        .map(|n| n as f64)
}
