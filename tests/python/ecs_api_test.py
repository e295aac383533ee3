#!/usr/bin/env python3
"""The real aws CLI and boto3 against Capstan's ECS endpoint (capstan dev), unmodified but for
--endpoint-url: the ECS tutorial's flow, the waiters, pagination, and the errors clients see.

Environment: ECS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (set by the Rust test that
starts capstan dev). Exits non-zero on the first failed check, saying which.
"""

import datetime
import json
import time
import os
import subprocess
import sys
import tempfile

import boto3
import botocore.auth
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["ECS_ENDPOINT"]
REGION = "eu-west-3"  # any region is accepted
os.environ["AWS_DEFAULT_REGION"] = REGION
WORK = tempfile.mkdtemp(prefix="capstan-ecs-")


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def aws(*args, env=None, expect_error=None, service="ecs"):
    """Runs `aws ecs ARGS --endpoint-url …`; returns the parsed JSON output (or the error text)."""
    cmd = [sys.executable, "-m", "awscli", service, *args, "--endpoint-url", ENDPOINT, "--output", "json"]
    run_env = dict(os.environ, **(env or {}))
    p = subprocess.run(cmd, capture_output=True, text=True, env=run_env, timeout=600)
    if expect_error is not None:
        check(p.returncode != 0 and expect_error in p.stderr,
              f"aws ecs {args[0]} fails with {expect_error} (got rc={p.returncode}: {p.stderr.strip()[-300:]})")
        return p.stderr
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
        check(False, f"aws ecs {' '.join(args)} exits 0")
    return json.loads(p.stdout) if p.stdout.strip() else {}


def taskdef_file(name, revision_text, task_cpu="256"):
    """A task definition file as the ECS docs write them for --cli-input-json."""
    doc = {
        "family": name,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["EC2", "FARGATE"],
        "cpu": task_cpu,
        "memory": "512",
        "containerDefinitions": [{
            "name": "app",
            "image": "busybox",
            "essential": True,
            "cpu": 128,
            "memory": 64,
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
            "entryPoint": ["sh", "-c"],
            "command": [f"echo {revision_text}; exec sleep 3600"],
            "logConfiguration": {"logDriver": "awslogs",
                                 "options": {"awslogs-group": "/ecs/web", "awslogs-region": REGION,
                                             "awslogs-stream-prefix": "ecs"}},
        }],
    }
    path = os.path.join(WORK, f"{name}-{revision_text}.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return "file://" + path


def cli_flow():
    c = aws("create-cluster", "--cluster-name", "tutorial")
    check(c["cluster"]["clusterName"] == "tutorial" and c["cluster"]["status"] == "ACTIVE",
          "create-cluster answers the cluster")
    names = [a.rsplit("/", 1)[-1] for a in aws("list-clusters")["clusterArns"]]
    check("tutorial" in names and "default" in names, f"list-clusters lists it: {names}")

    # Account settings: defaultLogDriverMode is filled into task definitions registered while
    # it is set; settings Capstan does not act on are refused.
    eff = aws("list-account-settings", "--effective-settings")["settings"]
    mode = [x for x in eff if x["name"] == "defaultLogDriverMode"]
    check([(x["value"], x["type"]) for x in mode] == [("non-blocking", "aws_managed")],
          f"list-account-settings --effective-settings shows ECS's default log mode: {mode}")
    check(aws("list-account-settings")["settings"] == [], "no setting is set at first")
    put = aws("put-account-setting-default", "--name", "defaultLogDriverMode", "--value", "blocking")
    check(put["setting"]["value"] == "blocking" and put["setting"]["type"] == "user",
          f"put-account-setting-default sets it: {put}")
    blocking = aws("register-task-definition", "--cli-input-json",
                   taskdef_file("logmode", "x"))["taskDefinition"]
    opts = blocking["containerDefinitions"][0]["logConfiguration"]["options"]
    check(opts.get("mode") == "blocking" and opts.get("awslogs-group") == "/ecs/web",
          f"a task definition registered meanwhile gets mode blocking: {opts}")
    listed = aws("list-account-settings", "--name", "defaultLogDriverMode")["settings"]
    check([x["value"] for x in listed] == ["blocking"], f"list-account-settings --name: {listed}")
    aws("delete-account-setting", "--name", "defaultLogDriverMode")
    again = aws("register-task-definition", "--cli-input-json",
                taskdef_file("logmode", "y"))["taskDefinition"]
    check("mode" not in again["containerDefinitions"][0]["logConfiguration"]["options"],
          "after delete-account-setting no mode is filled in (the built-in non-blocking applies)")
    aws("put-account-setting", "--name", "containerInsights", "--value", "enabled",
        expect_error="InvalidParameterException")
    aws("put-account-setting", "--name", "defaultLogDriverMode", "--value", "blocking",
        "--principal-arn", "arn:aws:iam::123456789012:user/bob",
        expect_error="InvalidParameterException")
    aws("put-account-setting", "--name", "taskLongArnFormat", "--value", "enabled")

    td = aws("register-task-definition", "--cli-input-json", taskdef_file("web", "one"))
    check(td["taskDefinition"]["revision"] == 1 and td["taskDefinition"]["networkMode"] == "awsvpc",
          "register-task-definition from a file gives revision 1")

    # Capstan dev's agents are in the default cluster: the service runs there.
    s = aws("create-service", "--cluster", "default", "--service-name", "web",
            "--task-definition", "web", "--desired-count", "2",
            "--network-configuration", "awsvpcConfiguration={subnets=[subnet-1],assignPublicIp=DISABLED}",
            "--deployment-configuration", "maximumPercent=200,minimumHealthyPercent=100")
    check(s["service"]["serviceName"] == "web" and s["service"]["desiredCount"] == 2,
          "create-service answers the service")
    aws("wait", "services-stable", "--cluster", "default", "--services", "web")
    print("ok: aws ecs wait services-stable returns")

    arns = aws("list-tasks", "--cluster", "default", "--service-name", "web")["taskArns"]
    check(len(arns) == 2, f"list-tasks lists the service's 2 tasks: {arns}")
    tasks = aws("describe-tasks", "--cluster", "default", "--tasks", *arns)["tasks"]
    check([t["lastStatus"] for t in tasks] == ["RUNNING", "RUNNING"], "describe-tasks: both RUNNING")
    check(all(isinstance(t["createdAt"], (int, float)) for t in tasks), "timestamps are epoch seconds")

    svc = aws("describe-services", "--cluster", "default", "--services", "web")["services"][0]
    check(svc["runningCount"] == 2 and svc["desiredCount"] == 2 and len(svc["deployments"]) == 1,
          "describe-services: 2 running of 2, one deployment")

    aws("register-task-definition", "--cli-input-json", taskdef_file("web", "two"))
    aws("update-service", "--cluster", "default", "--service", "web", "--task-definition", "web:2")
    aws("wait", "services-stable", "--cluster", "default", "--services", "web")
    svc = aws("describe-services", "--cluster", "default", "--services", "web")["services"][0]
    check(svc["deployments"][0]["taskDefinition"].endswith("task-definition/web:2")
          and svc["runningCount"] == 2,
          "update-service to web:2 rolls out and is stable again")

    # Service deployments and revisions: one per rollout, newest first. A deployment completes
    # once its tasks are healthy, which may come after the service is stable; the first was
    # SUCCESSFUL, or STOPPED if web:2 replaced it before that.
    deadline = time.time() + 60
    while True:
        deps = aws("list-service-deployments", "--cluster", "default", "--service", "web")["serviceDeployments"]
        if deps[0]["status"] == "SUCCESSFUL" or time.time() > deadline:
            break
        time.sleep(0.5)
    check(len(deps) == 2 and deps[0]["status"] == "SUCCESSFUL" and "finishedAt" in deps[0]
          and deps[1]["status"] in ("SUCCESSFUL", "STOPPED")
          and all(":service-deployment/default/web/" in d["serviceDeploymentArn"] for d in deps),
          f"list-service-deployments lists both rollouts, newest first: {deps}")
    check(aws("list-service-deployments", "--cluster", "default", "--service", "web",
              "--status", "IN_PROGRESS")["serviceDeployments"] == [],
          "list-service-deployments --status IN_PROGRESS: none")
    full = aws("describe-service-deployments", "--service-deployment-arns",
               deps[0]["serviceDeploymentArn"], deps[0]["serviceDeploymentArn"][:-1] + "x")
    sd = full["serviceDeployments"]
    check(len(sd) == 1 and sd[0]["targetServiceRevision"]["arn"] == deps[0]["targetServiceRevisionArn"]
          and [r["arn"] for r in sd[0]["sourceServiceRevisions"]] == [deps[1]["targetServiceRevisionArn"]]
          and [f["reason"] for f in full["failures"]] == ["MISSING"],
          f"describe-service-deployments: web:2's moved from web:1's revision; an unknown one is MISSING: {full}")
    revs = aws("describe-service-revisions", "--service-revision-arns",
               deps[0]["targetServiceRevisionArn"], deps[1]["targetServiceRevisionArn"])["serviceRevisions"]
    check([r["taskDefinition"].rsplit("/", 1)[-1] for r in revs] == ["web:2", "web:1"],
          f"describe-service-revisions names each revision's task definition: {revs}")
    aws("stop-service-deployment", "--service-deployment-arn", deps[0]["serviceDeploymentArn"],
        expect_error="InvalidParameterException")

    run = aws("run-task", "--cluster", "default", "--task-definition", "web:2", "--count", "1",
              "--launch-type", "FARGATE",
              "--network-configuration", "awsvpcConfiguration={subnets=[subnet-1]}")
    check(len(run["tasks"]) == 1 and run["failures"] == [], "run-task starts one task (FARGATE-shaped)")
    task_arn = run["tasks"][0]["taskArn"]
    aws("wait", "tasks-running", "--cluster", "default", "--tasks", task_arn)
    print("ok: aws ecs wait tasks-running returns")

    # Its container logs through the CloudWatch Logs API, named as the awslogs driver names
    # them: group /ecs/web, stream ecs/app/<task id>.
    task_id = task_arn.rsplit("/", 1)[-1]
    stream = f"ecs/app/{task_id}"
    logs = lambda *a, **kw: aws(*a, service="logs", **kw)
    streams = logs("describe-log-streams", "--log-group-name", "/ecs/web",
                   "--log-stream-name-prefix", stream)["logStreams"]
    check([x["logStreamName"] for x in streams] == [stream],
          f"describe-log-streams finds the task's stream: {streams}")
    deadline = time.time() + 30
    while True:
        events = logs("get-log-events", "--log-group-name", "/ecs/web",
                      "--log-stream-name", stream, "--start-from-head")["events"]
        if events or time.time() > deadline:
            break
        time.sleep(0.2)
    check([e["message"] for e in events] == ["two"] and events[0]["timestamp"] > 1e12,
          f"get-log-events reads the container's output with millisecond times: {events}")
    found = logs("filter-log-events", "--log-group-name", "/ecs/web", "--filter-pattern", "two")
    names = {e["logStreamName"] for e in found["events"]}
    check(stream in names and all(e["message"] == "two" for e in found["events"]),
          f"filter-log-events finds it across the group's streams: {sorted(names)}")
    logs("get-log-events", "--log-group-name", "/ecs/web", "--log-stream-name", "ecs/app/nope",
         expect_error="ResourceNotFoundException")
    stopped = aws("stop-task", "--cluster", "default", "--task", task_arn, "--reason", "tutorial done")
    check(stopped["task"]["taskArn"] == task_arn, "stop-task answers the task")
    aws("wait", "tasks-stopped", "--cluster", "default", "--tasks", task_arn)
    t = aws("describe-tasks", "--cluster", "default", "--tasks", task_arn)["tasks"][0]
    check(t["lastStatus"] == "STOPPED", f"the stopped task is STOPPED ({t['lastStatus']})")

    service_arn = svc["serviceArn"]
    aws("tag-resource", "--resource-arn", service_arn,
        "--tags", "key=team,value=payments", "key=env,value=dev")
    aws("tag-resource", "--resource-arn", service_arn, "--tags", "key=env,value=prod")
    aws("untag-resource", "--resource-arn", service_arn, "--tag-keys", "team")
    tags = aws("list-tags-for-resource", "--resource-arn", service_arn)["tags"]
    check(tags == [{"key": "env", "value": "prod"}],
          f"tag-resource, untag-resource and list-tags-for-resource on the service: {tags}")
    cluster_arn = c["cluster"]["clusterArn"]
    aws("tag-resource", "--resource-arn", cluster_arn, "--tags", "key=owner,value=tutorial")
    tags = aws("list-tags-for-resource", "--resource-arn", cluster_arn)["tags"]
    check(tags == [{"key": "owner", "value": "tutorial"}], f"tags on the cluster: {tags}")
    aws("tag-resource", "--resource-arn", cluster_arn, "--tags", "key=aws:x,value=y",
        expect_error="InvalidParameterException")

    # Task scale-in protection: scaling to 0 stops the unprotected task only, until the
    # protection is lifted.
    arns = aws("list-tasks", "--cluster", "default", "--service-name", "web")["taskArns"]
    check(len(arns) == 2, f"the service runs 2 tasks before scale-in: {arns}")
    kept, other = arns
    p = aws("update-task-protection", "--cluster", "default", "--tasks", kept,
            "--protection-enabled", "--expires-in-minutes", "30")
    pt = p["protectedTasks"]
    check(len(pt) == 1 and pt[0]["taskArn"] == kept and pt[0]["protectionEnabled"]
          and 29 * 60 <= pt[0]["expirationDate"] - time.time() <= 30 * 60 + 5 and p["failures"] == [],
          f"update-task-protection protects the task for 30 minutes: {p}")
    g = aws("get-task-protection", "--cluster", "default", "--tasks", kept, other)["protectedTasks"]
    check([(x["taskArn"], x["protectionEnabled"]) for x in g] == [(kept, True), (other, False)],
          f"get-task-protection tells the protected task from the other: {g}")
    bad = aws("update-task-protection", "--cluster", "default", "--tasks", task_arn,
              "--protection-enabled")
    check(bad["protectedTasks"] == [] and [f["reason"] for f in bad["failures"]] == ["TASK_NOT_VALID"],
          f"a standalone (stopped) task cannot be protected: {bad['failures']}")
    aws("update-task-protection", "--cluster", "default", "--tasks", kept, "--protection-enabled",
        "--expires-in-minutes", "5000", expect_error="InvalidParameterException")
    aws("update-service", "--cluster", "default", "--service", "web", "--desired-count", "0")
    aws("wait", "tasks-stopped", "--cluster", "default", "--tasks", other)
    t = aws("describe-tasks", "--cluster", "default", "--tasks", kept)["tasks"][0]
    check(t["desiredStatus"] == "RUNNING" and t["lastStatus"] == "RUNNING",
          f"scale-in to 0 stopped the other task and left the protected one running ({t['desiredStatus']})")
    p = aws("update-task-protection", "--cluster", "default", "--tasks", kept, "--no-protection-enabled")
    check(p["protectedTasks"] == [{"taskArn": kept, "protectionEnabled": False}],
          f"update-task-protection --no-protection-enabled lifts it: {p}")
    aws("wait", "tasks-stopped", "--cluster", "default", "--tasks", kept)
    aws("wait", "services-stable", "--cluster", "default", "--services", "web")
    print("ok: once lifted, the scale-in stops the task and the service is stable at 0")

    d = aws("delete-service", "--cluster", "default", "--service", "web", "--force")
    check(d["service"]["serviceName"] == "web", "delete-service --force answers the service")
    d = aws("delete-cluster", "--cluster", "tutorial")
    check(d["cluster"]["clusterName"] == "tutorial", "delete-cluster answers the cluster")

    # Errors, as ECS names them.
    aws("describe-services", "--cluster", "no-such-cluster", "--services", "web",
        expect_error="ClusterNotFoundException")
    aws("create-service", "--cluster", "default", "--service-name", "dup",
        "--task-definition", "web", "--desired-count", "0")
    err = aws("create-service", "--cluster", "default", "--service-name", "dup",
              "--task-definition", "web", "--desired-count", "0",
              expect_error="InvalidParameterException")
    check("not idempotent" in err, "a duplicate service is not idempotent")
    err = aws("register-task-definition", "--cli-input-json", taskdef_file("bad", "x", task_cpu="lots"),
              expect_error="Exception")
    check("cpu" in err, "an invalid cpu is refused, naming cpu")
    aws("update-service", "--cluster", "default", "--service", "no-such-service",
        "--desired-count", "1", expect_error="ServiceNotFoundException")
    aws("list-clusters", env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
        expect_error="InvalidSignatureException")
    aws("list-clusters", env={"AWS_ACCESS_KEY_ID": "AKCSAAAAAAAAAAAAAAAA"},
        expect_error="UnrecognizedClientException")
    aws("delete-service", "--cluster", "default", "--service", "dup", "--force")


def client(**kw):
    return boto3.client("ecs", endpoint_url=ENDPOINT, region_name=REGION, **kw)


def boto3_flow():
    ecs = client()
    ecs.create_cluster(clusterName="boto")
    for i in range(150):
        ecs.register_task_definition(
            family=f"page-{i:03d}",
            containerDefinitions=[{"name": "app", "image": "busybox", "memory": 16,
                                   "entryPoint": ["sh", "-c"], "command": ["sleep 3600"]}])
    arns = []
    pages = 0
    for page in ecs.get_paginator("list_task_definitions").paginate(familyPrefix="page-",
                                                                   PaginationConfig={"PageSize": 40}):
        pages += 1
        arns.extend(page["taskDefinitionArns"])
    check(len(arns) == 150 and len(set(arns)) == 150 and pages == 4,
          f"the paginator walks 150 task definitions in 4 pages of 40 ({len(arns)} in {pages})")
    families = []
    for page in ecs.get_paginator("list_task_definition_families").paginate(familyPrefix="page-"):
        families.extend(page["families"])
    check(len(families) == 150, f"list_task_definition_families pages through 150 ({len(families)})")

    token = "boto3-retry-0001"
    first = ecs.run_task(cluster="default", taskDefinition="page-000", count=2, clientToken=token)
    again = ecs.run_task(cluster="default", taskDefinition="page-000", count=2, clientToken=token)
    ids = sorted(t["taskArn"] for t in first["tasks"])
    check(len(ids) == 2 and ids == sorted(t["taskArn"] for t in again["tasks"]),
          "a RunTask retried with the same clientToken starts nothing new")
    ecs.get_waiter("tasks_running").wait(cluster="default", tasks=ids,
                                         WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    print("ok: boto3's tasks_running waiter returns")
    listed = ecs.list_tasks(cluster="default", family="page-000")["taskArns"]
    check(sorted(listed) == ids, f"only those two tasks run: {listed}")
    for arn in ids:
        ecs.stop_task(cluster="default", task=arn)
    ecs.get_waiter("tasks_stopped").wait(cluster="default", tasks=ids,
                                         WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    print("ok: boto3's tasks_stopped waiter returns")

    described = ecs.describe_clusters(clusters=["boto"], include=["STATISTICS", "TAGS"])["clusters"][0]
    stats = {s["name"]: s["value"] for s in described.get("statistics", [])}
    check(len(stats) == 8 and stats.get("runningEC2TasksCount") == "0",
          f"describe_clusters include=STATISTICS counts the cluster's tasks: {stats}")
    check("settings" not in described, f"what include does not name is left out: {described}")
    # Capstan's CreateCapacityProvider takes nodeGroupProvider where ECS has an Auto Scaling
    # group, which boto3's model cannot send: the body is swapped before it is signed.
    # UpdateCapacityProvider takes ECS's own shape.
    raw = client()
    body = json.dumps({"name": "boto-pool", "nodeGroupProvider": {
        "endpoint": "http://127.0.0.1:9", "groupId": "boto",
        "managedScaling": {"status": "ENABLED", "targetCapacity": 100}}})

    def swap_body(request, **_):
        request.data = body.encode()
        request.headers["Content-Length"] = str(len(request.data))
    raw.meta.events.register("before-sign.ecs.CreateCapacityProvider", swap_body)
    raw.create_capacity_provider(name="boto-pool", autoScalingGroupProvider={
        "autoScalingGroupArn": "unused"})
    updated = ecs.update_capacity_provider(name="boto-pool", autoScalingGroupProvider={
        "managedScaling": {"status": "ENABLED", "targetCapacity": 75},
        "managedDraining": "ENABLED"})["capacityProvider"]
    check(updated.get("updateStatus") == "UPDATE_COMPLETE",
          f"update_capacity_provider answers UPDATE_COMPLETE: {updated}")
    cp = ecs.describe_capacity_providers(capacityProviders=["boto-pool"])["capacityProviders"][0]
    asg = cp.get("autoScalingGroupProvider", {})
    check(asg.get("managedScaling", {}).get("targetCapacity") == 75
          and asg.get("managedDraining") == "ENABLED" and cp.get("status") == "ACTIVE",
          f"boto3 reads the stored update as autoScalingGroupProvider: {cp}")
    try:
        ecs.update_capacity_provider(name="boto-pool", autoScalingGroupProvider={
            "managedScaling": {"targetCapacity": 101}})
        check(False, "targetCapacity 101 is refused")
    except ClientError as e:
        check(e.response["Error"]["Code"] == "InvalidParameterException",
              f"update_capacity_provider out of range ({e.response['Error']['Code']})")
    ecs.delete_capacity_provider(capacityProvider="boto-pool")
    try:
        ecs.delete_capacity_provider(capacityProvider="no-such-provider")
        check(False, "deleting an unknown capacity provider fails")
    except ClientError as e:
        check(e.response["Error"]["Code"] == "InvalidParameterException",
              f"delete_capacity_provider of an unknown one ({e.response['Error']['Code']})")
    try:
        ecs.delete_cluster(cluster="no-such-cluster")
        check(False, "deleting an unknown cluster fails")
    except ClientError as e:
        check(e.response["Error"]["Code"] == "ClusterNotFoundException",
              f"boto3 reads the error code ({e.response['Error']['Code']})")
    try:
        ecs.list_clusters(maxResults=0)
        check(False, "maxResults 0 is refused")
    except Exception as e:  # botocore validates the range itself, or the server refuses it
        print(f"ok: maxResults 0 is refused ({type(e).__name__})")

    # A request signed 10 minutes ago is refused, as AWS refuses it.
    real_now = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: real_now() - datetime.timedelta(minutes=10)
    try:
        client(config=Config(retries={"max_attempts": 1, "mode": "standard"})).list_clusters()
        check(False, "an expired request is refused")
    except ClientError as e:
        code = e.response["Error"]["Code"]
        message = e.response["Error"]["Message"]
        check(code == "InvalidSignatureException" and "Signature expired" in message,
              f"an expired request is refused ({code}: {message})")
    finally:
        botocore.auth.get_current_datetime = real_now
    ecs.delete_cluster(cluster="boto")


if __name__ == "__main__":
    cli_flow()
    boto3_flow()
    print("all ECS endpoint checks passed")
