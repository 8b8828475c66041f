#!/usr/bin/env python3
"""Reads a whole Kinesis stream with boto3 and de-aggregates it with aws-kinesis-agg.

The independent check of what tillgate put: neither library was written here. Prints
JSON: the Kinesis records read, how many were KPL aggregates, and every user record
(shard, partition key, data as UTF-8, whether it came out of an aggregate), per shard
in sequence order, parents before children.

usage: read_stream.py ENDPOINT STREAM
"""
import base64
import json
import sys
import time

import boto3
from aws_kinesis_agg.deaggregator import iter_deaggregate_records


def main():
    endpoint, stream = sys.argv[1], sys.argv[2]
    client = boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
    )
    shards = []
    kwargs = {"StreamName": stream}
    while True:
        page = client.list_shards(**kwargs)
        shards.extend(page["Shards"])
        token = page.get("NextToken")
        if not token:
            break
        kwargs = {"NextToken": token}
    # Parents first: a child's records come after its parent's.
    shards.sort(key=lambda s: (s.get("ParentShardId") is not None, s["ShardId"]))
    out = {"kinesis_records": 0, "aggregated_kinesis_records": 0, "user_records": []}
    for shard in shards:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        empty = 0
        while iterator and empty < 2:
            answer = client.get_records(ShardIterator=iterator, Limit=10000)
            records = answer["Records"]
            iterator = answer.get("NextShardIterator")
            if not records:
                empty += 1
                time.sleep(0.05)
                continue
            empty = 0
            out["kinesis_records"] += len(records)
            for r in records:
                if r["Data"][:4] == b"\xf3\x89\x9a\xc2":
                    out["aggregated_kinesis_records"] += 1
            for user in iter_deaggregate_records(records, data_format="Boto3"):
                k = user["kinesis"]
                data = k["data"]
                aggregated = bool(k.get("aggregated", False))
                if aggregated:
                    data = base64.b64decode(data)
                out["user_records"].append(
                    {
                        "shard": shard["ShardId"],
                        "partition_key": k["partitionKey"],
                        "data": data.decode("utf-8"),
                        "aggregated": aggregated,
                    }
                )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
