#!/usr/bin/env python3
"""Runs `tillgate rules export --json` statements on Flink itself (PyFlink's local
mini-cluster, streaming mode) over recorded transactions, and prints what they flagged.

usage: flink_rules.py EXPORT_JSON INPUT_NDJSON

The source table is the schema the chain job reads (docs/cloud.md, "Chain-wide rules")
over a file instead of the transactions stream: this machine cannot fetch the Kinesis
connector. Event time is the gateway's (occurred_at, or received_at when the terminal
clock was off), from UTC timestamps with milliseconds as the gateways write them; the
watermark allows 30 s of disorder. Prints a JSON list of {rule_id, txn_id, store_id,
aggregates}, read from the union view the export's INSERT would write.
"""
import json
import sys

from pyflink.table import EnvironmentSettings, TableEnvironment

EVENT_TIME = """CASE WHEN clock_skew IS TRUE THEN received_at ELSE occurred_at END"""


def source_ddl(path):
    ts = EVENT_TIME
    return f"""
CREATE TABLE transactions (
  txn_id STRING, store_id STRING, terminal_id STRING, `type` STRING, total_minor BIGINT,
  currency STRING, operator_id STRING, customer_id STRING, original_txn_id STRING,
  clock_skew BOOLEAN, occurred_at STRING, received_at STRING,
  card ROW<token STRING, bin STRING, last4 STRING, entry_mode STRING>,
  event_time AS TO_TIMESTAMP_LTZ(
    UNIX_TIMESTAMP(SUBSTRING({ts} FROM 1 FOR 19), 'yyyy-MM-dd''T''HH:mm:ss') * 1000
      + CAST(SUBSTRING({ts} FROM 21 FOR 3) AS BIGINT), 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '30' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json',
        'json.ignore-parse-errors' = 'false')
"""


def main():
    export = json.load(open(sys.argv[1]))
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    config.set("parallelism.default", "1")
    config.set("table.local-time-zone", "UTC")
    env.execute_sql(source_ddl(sys.argv[2]))
    for statement in export["statements"]:
        if statement.startswith("INSERT INTO"):
            continue  # the sink is the deployment's; the union view is read instead
        env.execute_sql(statement)
    flagged = []
    with env.sql_query("SELECT rule_id, txn_id, store_id, aggregates FROM chain_alert_rows").execute().collect() as rows:
        for row in rows:
            flagged.append({"rule_id": row[0], "txn_id": row[1], "store_id": row[2], "aggregates": row[3]})
    print(json.dumps(flagged))


if __name__ == "__main__":
    main()
