"""A 500-tool registry for `cost.tool_context`: 50 servers × 10 tools, and labelled questions.

The catalog is synthetic (no public registry of this size with descriptions we may ship): each server is a
real kind of system with its own nouns, and each of its ten tools one operation an on-call engineer asks
for. The questions are written the way people ask in Slack, not copied from the descriptions; each names
the tool that answers it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QUESTIONS", "catalog"]

# (server, what it is, the object its tools act on, that object's metrics)
SYSTEMS = (
    (
        "kafka",
        "Kafka event streaming cluster",
        "topic",
        "consumer lag, bytes in, under-replicated partitions",
    ),
    ("postgres", "PostgreSQL database fleet", "database", "connections, replication lag, slow queries"),
    ("mysql", "MySQL database fleet", "schema", "queries per second, deadlocks, replica delay"),
    ("redis", "Redis cache clusters", "keyspace", "memory used, evictions, hit rate"),
    ("k8s", "Kubernetes clusters", "deployment", "pod restarts, CPU throttling, pending pods"),
    ("argo", "Argo CD continuous delivery", "application", "sync status, drift, rollout duration"),
    ("jenkins", "Jenkins build servers", "pipeline", "build duration, queue length, failure rate"),
    ("github", "GitHub code hosting", "repository", "open pull requests, check failures, merge rate"),
    ("sentry", "Sentry error tracking", "issue", "event count, users affected, regression rate"),
    ("datadog", "Datadog monitoring", "dashboard", "monitor states, SLO burn, host counts"),
    ("pagerduty", "PagerDuty incident response", "incident", "acknowledge time, escalations, pages"),
    ("s3", "S3 object storage", "bucket", "object count, storage size, 5xx errors"),
    ("cloudfront", "CloudFront CDN", "distribution", "cache hit ratio, origin latency, 4xx rate"),
    ("elasticsearch", "Elasticsearch search cluster", "index", "shard health, indexing rate, search latency"),
    ("cassandra", "Cassandra wide-column store", "keyspace table", "read latency, tombstones, compactions"),
    ("rabbitmq", "RabbitMQ message broker", "queue", "ready messages, unacked messages, publish rate"),
    ("consul", "Consul service discovery", "service", "healthy instances, check failures, KV writes"),
    ("vault", "Vault secrets manager", "secret engine", "token leases, seal status, request rate"),
    ("terraform", "Terraform infrastructure state", "workspace", "drifted resources, plan duration, applies"),
    ("snowflake", "Snowflake data warehouse", "warehouse", "credits used, queued queries, spill to disk"),
    ("bigquery", "BigQuery analytics", "dataset", "slot usage, bytes scanned, job errors"),
    ("dbt", "dbt transformation project", "model", "run time, test failures, freshness"),
    (
        "flink",
        "Flink stream processing",
        "streaming job",
        "checkpoint duration, backpressure, watermark delay",
    ),
    ("hive", "Hive metastore", "partition", "partition count, lock waits, metastore latency"),
    ("trino", "Trino query engine", "catalog", "running queries, queued queries, worker memory"),
    ("nginx", "NGINX edge proxies", "upstream", "request rate, 502 errors, upstream latency"),
    ("envoy", "Envoy service mesh", "route", "retries, circuit breaker trips, p99 latency"),
    (
        "istio",
        "Istio mesh control plane",
        "virtual service",
        "config push time, mTLS errors, sidecar version",
    ),
    ("grafana", "Grafana dashboards", "panel", "render time, datasource errors, alert rules"),
    ("prometheus", "Prometheus metrics", "scrape target", "scrape duration, series count, rule evaluation"),
    ("loki", "Loki log aggregation", "log stream", "ingestion rate, dropped lines, query time"),
    ("jaeger", "Jaeger tracing", "trace", "span count, sampling rate, collector drops"),
    ("okta", "Okta identity provider", "user account", "sign-in failures, MFA challenges, lockouts"),
    ("ldap", "LDAP directory", "group", "bind errors, replication delay, group size"),
    ("jira", "Jira issue tracker", "ticket", "open tickets, SLA breaches, resolution time"),
    ("confluence", "Confluence wiki", "page", "page views, edits, broken links"),
    ("stripe", "Stripe payments", "charge", "decline rate, refunds, payout delays"),
    ("twilio", "Twilio messaging", "SMS campaign", "delivery rate, carrier errors, opt-outs"),
    ("sendgrid", "SendGrid email delivery", "email campaign", "bounces, spam reports, deliveries"),
    ("cloudflare", "Cloudflare edge network", "DNS zone", "query volume, WAF blocks, DNSSEC status"),
    ("route53", "Route 53 DNS", "hosted zone", "health check status, record changes, resolver errors"),
    ("ec2", "EC2 compute", "instance", "CPU credits, status checks, network throughput"),
    ("lambda", "Lambda serverless functions", "function", "invocations, cold starts, throttles"),
    ("dynamodb", "DynamoDB key-value tables", "table", "consumed capacity, throttled requests, item size"),
    ("sqs", "SQS queues", "message queue", "visible messages, age of oldest message, dead letters"),
    ("mongodb", "MongoDB document store", "collection", "oplog window, lock percentage, document scans"),
    ("clickhouse", "ClickHouse OLAP database", "table part", "merges, inserted rows, query memory"),
    ("mlflow", "MLflow model registry", "registered model", "stage transitions, run metrics, artifact size"),
    ("ray", "Ray distributed compute", "Ray cluster", "object store memory, task failures, autoscaling"),
    (
        "feature-store",
        "feature store for ML",
        "feature view",
        "materialisation lag, null rates, serving latency",
    ),
)

# (tool, description): {what} the system, {obj} its object, {metrics} the object's metrics.
OPERATIONS = (
    ("list", "List every {obj} in the {what} with its status and owning team."),
    ("describe", "Show one {obj} of the {what} in detail: its configuration, current state and settings."),
    ("logs", "Read recent log lines written by a {obj} of the {what}, filtered by level or by text."),
    ("metrics", "Time series for a {obj} of the {what}: {metrics}."),
    ("restart", "Restart a {obj} of the {what}; interrupts it briefly (requires approval)."),
    ("scale", "Change how much capacity a {obj} of the {what} has: replicas, nodes or size."),
    ("alerts", "Alerts currently firing for the {what}, with severity, since when and the runbook link."),
    ("changes", "Deployments, upgrades and configuration changes made to the {what} in a time window."),
    ("owners", "Who is responsible for a {obj} of the {what}: owning team, on-call engineer, Slack channel."),
    ("health", "Overall health check of the {what}: is it up, degraded or down, and which components."),
)


def catalog() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(tool definitions as the model is sent them, server of each tool)."""
    tools: list[dict[str, Any]] = []
    servers: dict[str, str] = {}
    for short, what, obj, metrics in SYSTEMS:
        for op, template in OPERATIONS:
            name = f"{short.replace('-', '_')}__{op}"
            text = template.format(what=what, obj=obj, metrics=metrics)
            tools.append(
                {
                    "name": name,
                    "description": f"[{short} MCP server, owned by {short}-team] {text}",
                    "input_schema": {
                        "type": "object",
                        "properties": {
                            obj.replace(" ", "_"): {"type": "string", "description": f"the {obj}"},
                            "since": {"type": "string", "description": "ISO time or duration, e.g. 1h"},
                        },
                    },
                }
            )
            servers[name] = f"io.example/{short}"
    return tools, servers


# (question as asked, the tool that answers it)
QUESTIONS = (
    ("what's the consumer lag on the orders topic in kafka?", "kafka__metrics"),
    ("which kafka topics exist and who owns them?", "kafka__list"),
    ("is postgres replication lagging on the billing database?", "postgres__metrics"),
    ("restart the payments postgres database please", "postgres__restart"),
    ("show me the mysql slow query log for the users schema", "mysql__logs"),
    ("redis evictions spiked, what is the memory used on the sessions keyspace?", "redis__metrics"),
    ("roll out more replicas for the checkout deployment on kubernetes", "k8s__scale"),
    ("why do the checkout pods keep restarting? show the k8s deployment logs", "k8s__logs"),
    ("is the argo cd application for search out of sync?", "argo__metrics"),
    ("what changed in jenkins since yesterday?", "jenkins__changes"),
    ("who owns the ads-serving github repository?", "github__owners"),
    ("sentry: how many users are affected by the new checkout issue?", "sentry__metrics"),
    ("is anything firing in datadog right now?", "datadog__alerts"),
    ("who's on call for the payments pagerduty incident?", "pagerduty__owners"),
    ("the s3 logs bucket returns 5xx errors, show its metrics", "s3__metrics"),
    ("cloudfront cache hit ratio for the assets distribution", "cloudfront__metrics"),
    ("is the elasticsearch cluster healthy?", "elasticsearch__health"),
    ("cassandra read latency on the events keyspace table", "cassandra__metrics"),
    ("how many unacked messages are in the rabbitmq email queue?", "rabbitmq__metrics"),
    ("list the services registered in consul", "consul__list"),
    ("is vault sealed? health check please", "vault__health"),
    ("which terraform workspace drifted after last night's apply?", "terraform__metrics"),
    ("snowflake credits burned by the reporting warehouse today", "snowflake__metrics"),
    ("bigquery job errors on the marketing dataset", "bigquery__metrics"),
    ("dbt tests failing on the revenue model, read its logs", "dbt__logs"),
    ("flink job backpressure and checkpoint duration for the enrichment streaming job", "flink__metrics"),
    ("describe the hive partition layout for ads.spend_events", "hive__describe"),
    ("how many queries are queued in trino right now?", "trino__metrics"),
    ("nginx is throwing 502s for the api upstream, show the upstream logs", "nginx__logs"),
    ("envoy circuit breaker trips on the cart route", "envoy__metrics"),
    ("istio virtual service config for reviews, show me it in detail", "istio__describe"),
    ("grafana panel for checkout latency is broken, which datasource errors?", "grafana__metrics"),
    ("prometheus scrape target for node exporter is down? alerts firing", "prometheus__alerts"),
    ("loki dropping log lines from the ingress log stream", "loki__metrics"),
    ("find the slow trace in jaeger for the search request", "jaeger__describe"),
    ("unlock a user account in okta that is locked out", "okta__restart"),
    ("who is in the ldap group oncall-admins and who owns it?", "ldap__owners"),
    ("open jira tickets breaching SLA", "jira__metrics"),
    ("stripe decline rate went up, show charge metrics", "stripe__metrics"),
    ("twilio sms campaign delivery rate and carrier errors", "twilio__metrics"),
    ("sendgrid bounces for the welcome email campaign", "sendgrid__metrics"),
    ("cloudflare WAF blocks on our DNS zone", "cloudflare__metrics"),
    ("route53 health check failing for api.example.com hosted zone", "route53__health"),
    ("restart the stuck ec2 instance i-0abc", "ec2__restart"),
    ("lambda cold starts and throttles for the resize function", "lambda__metrics"),
    ("dynamodb throttled requests on the carts table", "dynamodb__metrics"),
    ("how old is the oldest message in the sqs billing queue?", "sqs__metrics"),
    ("mongodb oplog window on the events collection", "mongodb__metrics"),
    ("what changed in clickhouse this morning?", "clickhouse__changes"),
    ("which mlflow registered model moved to production recently? recent changes", "mlflow__changes"),
    ("scale the ray cluster up, we need more nodes", "ray__scale"),
    ("feature store materialisation lag for the user features view", "feature_store__metrics"),
)
