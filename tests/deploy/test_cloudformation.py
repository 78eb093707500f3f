"""The AWS templates lint clean and describe what docs/deploying-to-aws.md promises.

`cfn-lint` (pinned in the dev dependencies, offline: it carries the resource specifications)
checks every template against CloudFormation's schemas. The tests after it check what a
linter cannot: that the stacks fit together (every import is somebody's export), that the
task gets exactly the settings Concord reads, and that the properties the deployment relies
on (Multi-AZ, encryption, forced TLS, blue-green with rollback on alarm, ...) are there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import cfn_yaml

from server.app import create_app
from server.settings import Settings
from tests.deploy.container_files import ROOT, dockerfile_stages
from tests.deploy.test_container import OTHER_READERS, settings_variables

TEMPLATES = sorted((ROOT / "deploy" / "cloudformation").glob("*.yaml"))
CFN_LINT = Path(sys.executable).with_name("cfn-lint")


def load(name: str) -> dict[str, Any]:
    template = cfn_yaml.load(str(ROOT / "deploy" / "cloudformation" / f"{name}.yaml"))
    assert isinstance(template, dict)
    return template


def resources(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r.get("Properties", {}) for r in template["Resources"].values() if r["Type"] == kind]


def one(template: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = resources(template, kind)
    return found


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_every_template_passes_cfn_lint(tmp_path: Path) -> None:
    assert [t.stem for t in TEMPLATES] == ["data", "network", "pipeline", "registry", "service"]
    # A broken copy rides along in the same run (one start-up of cfn-lint, not two), to show
    # that the run reports what it should.
    broken = tmp_path / "broken.yaml"
    text = (ROOT / "deploy" / "cloudformation" / "data.yaml").read_text()
    broken.write_text(text.replace("MultiAZ: true", "MultiAZ: maybe", 1))
    result = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", *map(str, TEMPLATES), str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = [line for line in result.stdout.splitlines() if line.strip()]
    ours = [line for line in findings if not line.startswith(str(broken))]
    assert ours == [], result.stdout + result.stderr  # no error, warning or notice
    assert any(":E3012:" in line for line in findings if line.startswith(str(broken))), findings
    assert result.returncode != 0  # the broken copy's error


def test_every_import_is_exported_by_a_stack() -> None:
    exports: set[str] = set()
    imports: set[str] = set()
    for path in TEMPLATES:
        template = load(path.stem)
        for output in template.get("Outputs", {}).values():
            if "Export" in output:
                exports.add(output["Export"]["Name"]["Fn::Sub"])
        for node in walk(template):
            if isinstance(node, dict) and "Fn::ImportValue" in node:
                imports.add(node["Fn::ImportValue"]["Fn::Sub"])
    assert imports
    assert imports <= exports, imports - exports


def test_the_network_keeps_data_and_tasks_private() -> None:
    network = load("network")
    subnets = network["Resources"]
    for name in ("AppSubnetA", "AppSubnetB", "DataSubnetA", "DataSubnetB"):
        assert subnets[name]["Properties"].get("MapPublicIpOnLaunch") is not True
    data_ports = {
        e["PortRange"]["From"]
        for e in resources(network, "AWS::EC2::NetworkAclEntry")
        if e["NetworkAclId"] == {"Ref": "DataNetworkAcl"} and not e.get("Egress")
    }
    assert {1433, 6379} <= data_ports
    assert 0 not in data_ports  # nothing "all ports" in front of the data tier
    data_sources = {
        e["CidrBlock"]["Ref"]
        for e in resources(network, "AWS::EC2::NetworkAclEntry")
        if e["NetworkAclId"] == {"Ref": "DataNetworkAcl"}
    }
    assert data_sources == {"VpcCidr"}  # no rule for the internet
    groups = {g["GroupDescription"]: g for g in resources(network, "AWS::EC2::SecurityGroup")}
    database = next(g for d, g in groups.items() if "1433" in d)
    (rule,) = database["SecurityGroupIngress"]
    assert rule["SourceSecurityGroupId"] == {"Ref": "ServiceSecurityGroup"}


def test_sql_server_is_multi_az_encrypted_tls_only_with_a_read_replica() -> None:
    data = load("data")
    primary, replica = resources(data, "AWS::RDS::DBInstance")
    assert primary["Engine"]["Ref"] == "DatabaseEngine"
    assert data["Parameters"]["DatabaseEngine"]["Default"].startswith("sqlserver-")
    assert primary["MultiAZ"] is True
    assert primary["StorageEncrypted"] is True
    assert primary["KmsKeyId"] == {"Ref": "DataKey"}
    assert primary["PubliclyAccessible"] is False
    assert replica["SourceDBInstanceIdentifier"] == {"Ref": "Database"}
    parameters = one(data, "AWS::RDS::DBParameterGroup")
    assert parameters["Parameters"]["rds.force_ssl"] == "1"
    assert primary["DBParameterGroupName"] == replica["DBParameterGroupName"]


def test_redis_is_tls_with_auth_and_the_secrets_live_in_secrets_manager() -> None:
    data = load("data")
    cache = one(data, "AWS::ElastiCache::ReplicationGroup")
    assert cache["TransitEncryptionEnabled"] is True
    assert cache["AtRestEncryptionEnabled"] is True
    assert "CacheAuthSecret" in cache["AuthToken"]["Fn::Sub"]
    urls = {s["Name"]["Fn::Sub"]: s for s in resources(data, "AWS::SecretsManager::Secret")}
    assert urls["${EnvironmentName}/redis-url"]["SecretString"]["Fn::Sub"][0].startswith(
        "rediss://"
    )
    database_url = urls["${EnvironmentName}/database-url"]["SecretString"]["Fn::Sub"][0]
    assert database_url.startswith("mssql+aioodbc://")
    assert "Encrypt=yes&TrustServerCertificate=no" in database_url
    assert "GenerateSecretString" in urls["${EnvironmentName}/jwt-secret"]
    assert urls["${EnvironmentName}/database-master"]["GenerateSecretString"]["ExcludePunctuation"]
    bucket = one(data, "AWS::S3::Bucket")
    assert (
        bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]["SSEAlgorithm"]
        == "aws:kms"
    )
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def test_the_task_gets_the_settings_concord_reads_from_secrets() -> None:
    service = load("service")
    (task, migrate) = resources(service, "AWS::ECS::TaskDefinition")
    (container,) = task["ContainerDefinitions"]
    secrets = {s["Name"] for s in container["Secrets"]}
    environment = {e["Name"] for e in container["Environment"]}
    assert secrets == {"DATABASE_URL", "DATABASE_READ_URL", "REDIS_URL", "JWT_SECRET"}
    for name in secrets | environment:
        assert name in settings_variables() or name in OTHER_READERS, name
    assert "CONCORD_WORKERS" in environment
    port = int(dockerfile_stages()[-1].all("EXPOSE")[0].arguments)
    assert service["Parameters"]["ServicePort"]["Default"] == port
    assert "/healthz" in container["HealthCheck"]["Command"][-1]["Fn::Sub"]
    (migration,) = migrate["ContainerDefinitions"]
    assert migration["Command"] == ["concord", "migrate"]


def test_health_check_paths_are_served(tmp_path: Path) -> None:
    service = load("service")
    paths = {
        g["HealthCheckPath"] for g in resources(service, "AWS::ElasticLoadBalancingV2::TargetGroup")
    }
    assert paths == {"/readyz"}
    app = create_app(Settings(CONCORD_DATA_DIR=tmp_path))
    served = {getattr(route, "path", None) for route in app.routes}
    assert {"/readyz", "/healthz"} <= served


def test_the_load_balancer_keeps_websockets_open_and_the_service_scales() -> None:
    service = load("service")
    balancer = one(service, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    attributes = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}
    assert int(attributes["idle_timeout.timeout_seconds"]) >= 3600
    ecs = one(service, "AWS::ECS::Service")
    assert ecs["LaunchType"] == "FARGATE"
    assert ecs["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    policies = resources(service, "AWS::ApplicationAutoScaling::ScalingPolicy")
    metrics = [json.dumps(p["TargetTrackingScalingPolicyConfiguration"]) for p in policies]
    assert any("ECSServiceAverageCPUUtilization" in m for m in metrics)
    assert any("ActiveConnectionCount" in m for m in metrics)
    groups = resources(service, "AWS::Logs::LogGroup")
    assert all("RetentionInDays" in g and "KmsKeyId" in g for g in groups)
    assert len(resources(service, "AWS::CloudWatch::Alarm")) >= 4


def test_deployments_are_blue_green_and_roll_back_on_alarm() -> None:
    service = load("service")
    assert one(service, "AWS::ECS::Service")["DeploymentController"] == {"Type": "CODE_DEPLOY"}
    group = one(service, "AWS::CodeDeploy::DeploymentGroup")
    assert group["DeploymentStyle"]["DeploymentType"] == "BLUE_GREEN"
    assert group["AutoRollbackConfiguration"]["Enabled"] is True
    assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
    alarms = {a["Name"]["Ref"] for a in group["AlarmConfiguration"]["Alarms"]}
    assert alarms <= set(service["Resources"])
    assert len(group["LoadBalancerInfo"]["TargetGroupPairInfoList"][0]["TargetGroups"]) == 2


def test_the_pipeline_tests_builds_migrates_then_deploys() -> None:
    pipeline = load("pipeline")
    stages = one(pipeline, "AWS::CodePipeline::Pipeline")["Stages"]
    assert [s["Name"] for s in stages] == ["Source", "TestAndBuild", "Migrate", "Deploy"]
    deploy = stages[-1]["Actions"][0]
    assert deploy["ActionTypeId"]["Provider"] == "CodeDeployToECS"
    projects = resources(pipeline, "AWS::CodeBuild::Project")
    for project in projects:
        assert (ROOT / project["Source"]["BuildSpec"]).is_file()
    build = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    commands = build["phases"]["build"]["commands"]
    # The README's test command, under CI=true so missing servers fail instead of skipping.
    assert commands[0] == "bash .ci/run"
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    assert build["env"]["variables"]["CI"] == "true"
    assert any(c.startswith("docker build") for c in commands)
    assert any(c.startswith("docker push") for c in commands)
    configuration = deploy["Configuration"]
    artifacts = build["artifacts"]["files"]
    for key in ("TaskDefinitionTemplatePath", "AppSpecTemplatePath"):
        assert configuration[key] in artifacts
    assert "imageDetail.json" in artifacts
    assert "deploy/buildspec-migrate.yml" in artifacts  # the Migrate stage's only input
    migrate = yaml.safe_load((ROOT / "deploy" / "buildspec-migrate.yml").read_text())
    script = "\n".join(migrate["phases"]["build"]["commands"])
    assert "aws ecs run-task" in script
    assert 'test "$EXIT_CODE" = 0' in script


def test_the_appspec_names_the_service_container_and_port() -> None:
    appspec = yaml.safe_load((ROOT / "deploy" / "appspec.yaml").read_text())
    target = appspec["Resources"][0]["TargetService"]["Properties"]
    (container,) = resources(load("service"), "AWS::ECS::TaskDefinition")[0]["ContainerDefinitions"]
    assert target["LoadBalancerInfo"]["ContainerName"] == container["Name"]
    assert target["LoadBalancerInfo"]["ContainerPort"] == 8000
    assert target["TaskDefinition"] == "<TASK_DEFINITION>"


DESCRIBED = {
    "taskDefinitionArn": "arn:aws:ecs:eu-west-1:1:task-definition/concord:7",
    "family": "concord",
    "revision": 7,
    "status": "ACTIVE",
    "compatibilities": ["EC2", "FARGATE"],
    "requiresAttributes": [{"name": "ecs.capability.secrets.asm.environment-variables"}],
    "registeredAt": "2026-11-30T10:00:00+00:00",
    "registeredBy": "arn:aws:iam::1:role/x",
    "cpu": "1024",
    "containerDefinitions": [
        {"name": "concord", "image": "repo/concord:old", "portMappings": [{"containerPort": 8000}]},
        {"name": "sidecar", "image": "repo/sidecar:1"},
    ],
}


def render(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "render_task_definition.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_render_task_definition_swaps_the_image_and_drops_read_only_fields() -> None:
    result = render(
        "--image", "<IMAGE1_NAME>", "--container", "concord", stdin=json.dumps(DESCRIBED)
    )
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert set(rendered) == {"family", "cpu", "containerDefinitions"}
    images = {c["name"]: c["image"] for c in rendered["containerDefinitions"]}
    assert images == {"concord": "<IMAGE1_NAME>", "sidecar": "repo/sidecar:1"}


def test_render_task_definition_refuses_an_unknown_container_and_bad_input() -> None:
    result = render("--image", "x", "--container", "api", stdin=json.dumps(DESCRIBED))
    assert result.returncode != 0
    assert "no container 'api'" in result.stderr
    result = render("--image", "x", stdin="not json")
    assert result.returncode != 0
    assert "stdin is not JSON" in result.stderr
    assert re.search(r"\S", result.stdout) is None


@pytest.mark.parametrize("path", ["buildspec.yml", "deploy/buildspec-migrate.yml"])
def test_buildspecs_are_version_0_2(path: str) -> None:
    assert yaml.safe_load((ROOT / path).read_text())["version"] == 0.2
