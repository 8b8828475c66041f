#!/usr/bin/env python3
"""Runs `tillgate rules export --json` statements on Flink itself (PyFlink's local
mini-cluster, streaming mode) over recorded transactions, and prints what they flagged.

usage: flink_rules.py EXPORT_JSON INPUT_NDJSON

The source table is the schema the chain job reads (docs/cloud.md, "Chain-wide rules")
over a file instead of the transactions stream: this machine cannot fetch the Kinesis
connector. Event time is the instant the gateway's windows used (`event_time_ms`, which
every gateway journals); the watermark allows 30 s of disorder. Prints JSON: `alerts`, a list of {rule_id, txn_id,
store_id, aggregates} from the rules' union view, and `reports`, a list of {report_id,
key, window_start_ms, window_end_ms, aggregates} from the reports' union view (the views
the export's INSERTs would write; at the end of the file Flink closes every window).
"""
import datetime
import json
import sys

from pyflink.table import EnvironmentSettings, TableEnvironment

def source_ddl(path):
    return f"""
CREATE TABLE transactions (
  txn_id STRING, store_id STRING, terminal_id STRING, `type` STRING, total_minor BIGINT,
  currency STRING, operator_id STRING, customer_id STRING, original_txn_id STRING,
  clock_skew BOOLEAN, occurred_at STRING, received_at STRING, event_time_ms BIGINT,
  card ROW<token STRING, bin STRING, last4 STRING, entry_mode STRING>,
  -- Rows journaled before gateways wrote event_time_ms: the gateway's receive time.
  event_time AS TO_TIMESTAMP_LTZ(COALESCE(event_time_ms,
    UNIX_TIMESTAMP(SUBSTRING(received_at FROM 1 FOR 19), 'yyyy-MM-dd''T''HH:mm:ss') * 1000
      + CAST(SUBSTRING(received_at FROM 21 FOR 3) AS BIGINT)), 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '30' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json',
        'json.ignore-parse-errors' = 'false')
"""


def epoch_ms(value):
    """A window bound (TIMESTAMP(3) in the session's zone, UTC) in ms since the epoch."""
    return int(value.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def main():
    export = json.load(open(sys.argv[1]))
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    config.set("parallelism.default", "1")
    # What the deployed job must set too (docs/cloud.md): windows align in UTC, and the
    # keep-first deduplication stays insert-only only without mini-batches.
    config.set("table.local-time-zone", "UTC")
    config.set("table.exec.mini-batch.enabled", "false")
    env.execute_sql(source_ddl(sys.argv[2]))
    for statement in export["statements"]:
        if statement.startswith("INSERT INTO"):
            continue  # the sink is the deployment's; the union view is read instead
        env.execute_sql(statement)
    flagged = []
    if export["rules"]:
        query = "SELECT rule_id, txn_id, store_id, aggregates FROM chain_alert_rows"
        with env.sql_query(query).execute().collect() as rows:
            for row in rows:
                flagged.append({"rule_id": row[0], "txn_id": row[1], "store_id": row[2], "aggregates": row[3]})
    windows = []
    if export["reports"]:
        query = "SELECT report_id, report_key, window_start, window_end, aggregates FROM chain_report_rows"
        with env.sql_query(query).execute().collect() as rows:
            for row in rows:
                windows.append(
                    {
                        "report_id": row[0],
                        "key": row[1],
                        "window_start_ms": epoch_ms(row[2]),
                        "window_end_ms": epoch_ms(row[3]),
                        "aggregates": json.loads(row[4]) if row[4] else {},
                    }
                )
    print(json.dumps({"alerts": flagged, "reports": windows}))


if __name__ == "__main__":
    main()
