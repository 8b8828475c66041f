#!/usr/bin/env python3
"""The fraud team's side of the alert path, and hostile deliveries on the alerts stream,
with boto3 and aws-kinesis-agg (neither written here), against an AWS emulator.

usage:
  alerts_stream.py subscribe ENDPOINT TOPIC_ARN        a queue (<topic>-team) subscribed to the topic; prints its URL
  alerts_stream.py drain ENDPOINT QUEUE_URL            every SNS message on the queue, as JSON
  alerts_stream.py drain-raw ENDPOINT QUEUE_URL        every message body on the queue, as JSON
  alerts_stream.py depth ENDPOINT QUEUE_URL            messages on the queue (visible, in flight, delayed)
  alerts_stream.py redeliver ENDPOINT STREAM           puts every record of the stream again, byte for byte
  alerts_stream.py put-corrupt ENDPOINT STREAM         puts the stream's first record with its MD5 broken
  alerts_stream.py put-aggregated ENDPOINT STREAM      aggregates stdin's lines with aws-kinesis-agg and puts them
"""
import json
import sys

import boto3
from aws_kinesis_agg.aggregator import RecordAggregator


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
    )


def subscribe(endpoint, topic_arn):
    sqs = client("sqs", endpoint)
    url = sqs.create_queue(QueueName=topic_arn.split(":")[-1] + "-team")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client("sns", endpoint).subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    print(url)


def drain(endpoint, url):
    sqs = client("sqs", endpoint)
    messages = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not got:
            break
        for m in got:
            envelope = json.loads(m["Body"])
            messages.append(
                {
                    "subject": envelope.get("Subject"),
                    "message": envelope.get("Message"),
                    "attributes": {k: v.get("Value") for k, v in envelope.get("MessageAttributes", {}).items()},
                }
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    print(json.dumps(messages))


def drain_raw(endpoint, url):
    sqs = client("sqs", endpoint)
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not got:
            break
        for m in got:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    print(json.dumps(bodies))


def depth(endpoint, url):
    """Messages on the queue: visible, in flight and delayed, summed."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
    found = client("sqs", endpoint).get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    print(sum(int(found.get(n, 0)) for n in names))


def records(kinesis, stream):
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            page = kinesis.get_records(ShardIterator=it, Limit=1000)
            if not page["Records"]:
                break
            yield from page["Records"]
            it = page.get("NextShardIterator")


def redeliver(endpoint, stream):
    kinesis = client("kinesis", endpoint)
    existing = list(records(kinesis, stream))
    for r in existing:
        kinesis.put_record(StreamName=stream, PartitionKey=r["PartitionKey"], Data=r["Data"])
    print(len(existing))


def put_corrupt(endpoint, stream):
    kinesis = client("kinesis", endpoint)
    first = next(records(kinesis, stream))
    data = bytearray(first["Data"])
    data[-1] ^= 0xFF
    put = kinesis.put_record(StreamName=stream, PartitionKey=first["PartitionKey"], Data=bytes(data))
    print(put["SequenceNumber"])


def put_aggregated(endpoint, stream):
    kinesis = client("kinesis", endpoint)
    aggregator = RecordAggregator()
    put = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        full = aggregator.add_user_record(json.loads(line)["store_id"], line.encode())
        if full:
            key, hash_key, data = full.get_contents()
            kinesis.put_record(StreamName=stream, PartitionKey=key, Data=data)
            put += 1
    rest = aggregator.clear_and_get()
    if rest:
        key, hash_key, data = rest.get_contents()
        kinesis.put_record(StreamName=stream, PartitionKey=key, Data=data)
        put += 1
    print(put)


def main():
    command, endpoint, arg = sys.argv[1:4]
    {
        "subscribe": subscribe,
        "drain": drain,
        "drain-raw": drain_raw,
        "depth": depth,
        "redeliver": redeliver,
        "put-corrupt": put_corrupt,
        "put-aggregated": put_aggregated,
    }[command](endpoint, arg)


if __name__ == "__main__":
    main()
