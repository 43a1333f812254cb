#!/usr/bin/env bash
# Least-privilege Kafka ACLs for rnnrec on a cluster without Strimzi (DESIGN.md,
# Security). The same list as components/strimzi-users/kafkausers.yaml; the unit
# tests compare the two, so change both together.
#
#   deploy/kafka-acls.sh                       # print the kafka-acls commands
#   deploy/kafka-acls.sh --apply \
#       --bootstrap-server broker:9093 --command-config admin.properties
#
# Printing is the default so the commands can be reviewed (or handed to whoever
# runs the cluster) before anything changes. --apply runs them with kafka-acls.sh
# from PATH (or $KAFKA_ACLS). admin.properties holds a cluster administrator's
# client settings (security.protocol, sasl.*, ssl.truststore.*); it is never part
# of this repository.
#
# Principals (create their SCRAM credentials first, see docs/operations.md):
#   rnnrec-worker   the serving workers
#   rnnrec-trainer  the online trainer
#   rnnrec-admin    the topics Job
#   rnnrec-keda     KEDA's lag reader (only with components/keda)
#   rnnrec-tools    the operator tools (rnnrec user delete, item, tail, replay)
# RNNREC_TOPIC_PREFIX is honoured like the services honour it.
set -euo pipefail

apply=0
bootstrap="BOOTSTRAP"
command_config="admin.properties"
while [ $# -gt 0 ]; do
  case "$1" in
    --apply) apply=1 ;;
    --bootstrap-server) bootstrap="$2"; shift ;;
    --command-config) command_config="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "kafka-acls: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$apply" = 1 ] && [ "$bootstrap" = "BOOTSTRAP" ]; then
  echo "kafka-acls: --apply needs --bootstrap-server and --command-config" >&2
  exit 2
fi

p="${RNNREC_TOPIC_PREFIX:-}"

# principal | resource type | pattern | name | operations
acls=(
  "rnnrec-worker|topic|literal|${p}clickstream|Read,Describe"
  "rnnrec-worker|topic|literal|${p}model-updates|Read,Describe"
  "rnnrec-worker|topic|literal|${p}item-updates|Read,Describe"
  "rnnrec-worker|topic|literal|${p}recommendations|Write,Describe"
  "rnnrec-worker|topic|literal|${p}purchase-predictions|Write,Describe"
  "rnnrec-worker|topic|literal|${p}clickstream-dlq|Write,Describe"
  # Events not keyed by user_id, re-sent keyed by user and read back (RNNREC_REPARTITION).
  "rnnrec-worker|topic|literal|${p}clickstream-repartition|Read,Write,Describe"
  # Faust's internal topics (changelogs, repartition, leader) carry the app id.
  "rnnrec-worker|topic|prefixed|rnnrec-worker-|Create,Read,Write,Describe,DescribeConfigs"
  "rnnrec-worker|group|prefixed|rnnrec-worker|Read,Describe"
  "rnnrec-trainer|topic|literal|${p}clickstream|Read,Describe"
  # No internal topics and no Create: the topics Job creates model-updates.
  "rnnrec-trainer|topic|literal|${p}model-updates|Read,Write,Describe,DescribeConfigs"
  "rnnrec-trainer|group|literal|rnnrec-trainer|Read,Describe"
  "rnnrec-admin|topic|literal|${p}clickstream|Create,Describe,DescribeConfigs"
  "rnnrec-admin|topic|literal|${p}recommendations|Create,Describe,DescribeConfigs"
  "rnnrec-admin|topic|literal|${p}purchase-predictions|Create,Describe,DescribeConfigs"
  "rnnrec-admin|topic|literal|${p}clickstream-dlq|Create,Describe,DescribeConfigs"
  "rnnrec-admin|topic|literal|${p}clickstream-repartition|Create,Describe,DescribeConfigs"
  "rnnrec-admin|topic|literal|${p}model-updates|Create,Describe,DescribeConfigs"
  "rnnrec-admin|topic|literal|${p}item-updates|Create,Describe,DescribeConfigs"
  "rnnrec-keda|topic|literal|${p}clickstream|Describe"
  "rnnrec-keda|topic|literal|${p}clickstream-repartition|Describe"
  "rnnrec-keda|group|literal|rnnrec-worker|Describe"
  # Operator tools: no consumer group (they assign partitions), no Create.
  "rnnrec-tools|topic|literal|${p}clickstream|Read,Write,Describe"
  "rnnrec-tools|topic|literal|${p}item-updates|Read,Write,Describe"
  "rnnrec-tools|topic|literal|${p}recommendations|Read,Describe"
  "rnnrec-tools|topic|literal|${p}purchase-predictions|Read,Describe"
  "rnnrec-tools|topic|literal|${p}clickstream-dlq|Read,Describe"
  "rnnrec-tools|topic|literal|${p}clickstream-repartition|Read,Describe"
  "rnnrec-tools|topic|literal|${p}model-updates|Read,Describe"
)

kafka_acls="${KAFKA_ACLS:-kafka-acls.sh}"
for entry in "${acls[@]}"; do
  IFS='|' read -r principal type pattern name operations <<<"$entry"
  cmd=("$kafka_acls" --bootstrap-server "$bootstrap" --command-config "$command_config"
       --add --allow-principal "User:${principal}" "--${type}" "$name"
       --resource-pattern-type "$pattern")
  IFS=',' read -r -a ops <<<"$operations"
  for op in "${ops[@]}"; do cmd+=(--operation "$op"); done
  if [ "$apply" = 1 ]; then
    "${cmd[@]}"
  else
    printf '%q ' "${cmd[@]}"
    printf '\n'
  fi
done
