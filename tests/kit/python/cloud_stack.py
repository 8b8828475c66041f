#!/usr/bin/env python3
"""Deploys cloud/template.yaml into an AWS emulator (moto's server) with boto3, then
reads back, through the emulator's own APIs, what the stack created.

usage: cloud_stack.py ENDPOINT TEMPLATE STACK OUTPUTS_FILE [Key=Value ...] [upload:BUCKET/KEY=PROGRAM ...]

An `upload:` argument zips PROGRAM as `bootstrap` (a Lambda package for provided.al2023)
into BUCKET/KEY first, creating the bucket.

Writes `describe-stacks` for the stack to OUTPUTS_FILE (what `tillgate cloud
gateway-config --outputs` reads) and prints JSON: the stack status, the Kinesis streams
(shards), the IAM roles' inline policies, the IoT role aliases (with their roles) and
policies, the SNS topics and their subscriptions, the functions and their event source
mappings, the tables, the queues with their attributes and the S3 buckets. Exits 1 if the
stack did not reach CREATE_COMPLETE.

moto's CloudFormation ignores AWS::SNS::Subscription resources: each is created here
through the SNS API from the template's own properties (topic and queue resolved from the
stack's resources), and listed under "created_by_api".
"""
import ast
import io
import json
import sys
import time
import zipfile

import boto3

REGION = "us-east-1"


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
    )


def upload(endpoint, spec):
    target, program = spec.split("=", 1)
    bucket, key = target.split("/", 1)
    s3 = client("s3", endpoint)
    s3.create_bucket(Bucket=bucket)
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(program, "bootstrap")
    s3.put_object(Bucket=bucket, Key=key, Body=package.getvalue())


def deploy(endpoint, template, stack, parameters):
    cf = client("cloudformation", endpoint)
    cf.create_stack(
        StackName=stack,
        TemplateBody=open(template).read(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters],
        Capabilities=["CAPABILITY_IAM"],
    )
    deadline = time.time() + 60
    while True:
        described = cf.describe_stacks(StackName=stack)
        status = described["Stacks"][0]["StackStatus"]
        if not status.endswith("_IN_PROGRESS") or time.time() > deadline:
            return described
        time.sleep(0.2)


def subscribe_as_the_template_says(endpoint, template, stack):
    """The template's AWS::SNS::Subscription resources, which moto's CloudFormation
    skips, created through the API; returns their logical ids."""
    from cfnlint.decode import decode

    parsed, problems = decode(template)
    if problems:
        raise SystemExit(f"the template does not parse: {problems}")
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in client("cloudformation", endpoint).list_stack_resources(StackName=stack)["StackResourceSummaries"]
    }
    sqs = client("sqs", endpoint)

    def resolve(value):
        if isinstance(value, dict) and "Ref" in value:
            return physical[value["Ref"]]
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            logical, attribute = value["Fn::GetAtt"]
            if attribute != "Arn":
                raise SystemExit(f"cannot resolve {value}")
            return sqs.get_queue_attributes(QueueUrl=physical[logical], AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
        return value

    created = []
    for logical, resource in parsed["Resources"].items():
        if resource["Type"] != "AWS::SNS::Subscription":
            continue
        props = resource["Properties"]
        attributes = {}
        if "FilterPolicy" in props:
            attributes["FilterPolicy"] = json.dumps(props["FilterPolicy"])
            attributes["FilterPolicyScope"] = props.get("FilterPolicyScope", "MessageAttributes")
        if "RawMessageDelivery" in props:
            attributes["RawMessageDelivery"] = str(props["RawMessageDelivery"]).lower()
        client("sns", endpoint).subscribe(
            TopicArn=resolve(props["TopicArn"]),
            Protocol=props["Protocol"],
            Endpoint=resolve(props["Endpoint"]),
            Attributes=attributes,
        )
        created.append(logical)
    return created


def document(value):
    """A policy document as a dict. moto keeps the documents a CloudFormation stack gave
    it as Python's repr of a dict rather than JSON; both are read."""
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return ast.literal_eval(value)


def inspect(endpoint):
    kinesis = client("kinesis", endpoint)
    streams = {}
    for name in kinesis.list_streams()["StreamNames"]:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        streams[name] = {"arn": summary["StreamARN"], "open_shards": summary["OpenShardCount"]}
    iam = client("iam", endpoint)
    roles = {}
    for role in iam.list_roles()["Roles"]:
        name = role["RoleName"]
        policies = [
            document(iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"])
            for p in iam.list_role_policies(RoleName=name)["PolicyNames"]
        ]
        roles[role["Arn"]] = {
            "trust": document(role["AssumeRolePolicyDocument"]),
            "policies": policies,
            "max_session_seconds": role.get("MaxSessionDuration"),
        }
    iot = client("iot", endpoint)
    aliases = {}
    for alias in iot.list_role_aliases()["roleAliases"]:
        description = iot.describe_role_alias(roleAlias=alias)["roleAliasDescription"]
        aliases[alias] = {
            "role_arn": description["roleArn"],
            "credential_seconds": description["credentialDurationSeconds"],
        }
    iot_policies = {
        p["policyName"]: document(iot.get_policy(policyName=p["policyName"])["policyDocument"])
        for p in iot.list_policies()["policies"]
    }
    sns = client("sns", endpoint)
    topics = [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    subscriptions = [
        {
            "topic": sub["TopicArn"],
            "protocol": sub["Protocol"],
            "endpoint": sub["Endpoint"],
            "filter_policy": document(
                sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"].get(
                    "FilterPolicy", "{}"
                )
            ),
        }
        for sub in sns.list_subscriptions()["Subscriptions"]
    ]
    lam = client("lambda", endpoint)
    functions = {
        f["FunctionName"]: {
            "runtime": f.get("Runtime"),
            "architectures": f.get("Architectures"),
            "role": f.get("Role"),
            "environment": f.get("Environment", {}).get("Variables", {}),
        }
        for f in lam.list_functions()["Functions"]
    }
    mappings = [
        {
            "source": m.get("EventSourceArn"),
            "function": m.get("FunctionArn"),
            "starting_position": m.get("StartingPosition"),
            "response_types": m.get("FunctionResponseTypes"),
            "bisect": m.get("BisectBatchOnFunctionError"),
            "retries": m.get("MaximumRetryAttempts"),
            "on_failure": m.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"),
        }
        for m in lam.list_event_source_mappings()["EventSourceMappings"]
    ]
    dynamodb = client("dynamodb", endpoint)
    tables = {}
    for name in dynamodb.list_tables()["TableNames"]:
        table = dynamodb.describe_table(TableName=name)["Table"]
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        tables[name] = {"key": table["KeySchema"], "ttl": ttl.get("AttributeName")}
    sqs = client("sqs", endpoint)
    queues = sqs.list_queues().get("QueueUrls", [])
    queue_attributes = {
        url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"] for url in queues
    }
    buckets = [b["Name"] for b in client("s3", endpoint).list_buckets()["Buckets"]]
    return {
        "streams": streams,
        "roles": roles,
        "role_aliases": aliases,
        "iot_policies": iot_policies,
        "topics": topics,
        "subscriptions": subscriptions,
        "functions": functions,
        "event_source_mappings": mappings,
        "tables": tables,
        "queues": queues,
        "queue_attributes": queue_attributes,
        "buckets": buckets,
    }


def main():
    endpoint, template, stack, outputs_file = sys.argv[1:5]
    for arg in sys.argv[5:]:
        if arg.startswith("upload:"):
            upload(endpoint, arg[len("upload:"):])
    parameters = [arg.split("=", 1) for arg in sys.argv[5:] if not arg.startswith("upload:")]
    described = deploy(endpoint, template, stack, parameters)
    with open(outputs_file, "w") as f:
        json.dump({"Stacks": described["Stacks"]}, f, default=str, indent=1)
    created_by_api = []
    if described["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE":
        created_by_api = subscribe_as_the_template_says(endpoint, template, stack)
    found = inspect(endpoint)
    found["created_by_api"] = created_by_api
    found["status"] = described["Stacks"][0]["StackStatus"]
    found["status_reason"] = described["Stacks"][0].get("StackStatusReason")
    print(json.dumps(found, default=str))
    sys.exit(0 if found["status"] == "CREATE_COMPLETE" else 1)


if __name__ == "__main__":
    main()
