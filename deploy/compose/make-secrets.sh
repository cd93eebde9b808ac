#!/usr/bin/env bash
# Makes the compose stack's secrets into ./secrets (git-ignored), once:
# a CA; the broker's certificate; one Kafka client certificate per chitose
# role (CN = its principal: chitose-ingest-27, chitose-transform, …); the
# ACL administrator's; the HTTPS certificate hubs connect to; the Osaka
# hub's bearer token and its hash (`chitose ingest token`, so build the
# image first); MinIO passwords. Keys are mode 0400 and owned by the user
# of the image that reads them (chitose 10001, Apache Kafka 1000).
#   docker build -f deploy/Dockerfile -t chitose:dev . && deploy/compose/make-secrets.sh
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets && cd secrets
[[ -f ca.crt ]] && { echo "secrets/ already made; remove it to start over" >&2; exit 1; }

openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=chitose demo CA" \
    -keyout ca.key -out ca.crt
leaf() { # name CN [subjectAltName]
    local name=$1 cn=$2 san=${3:-}
    openssl req -newkey rsa:3072 -nodes -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
        -out "$name.crt" ${san:+-extfile <(printf 'subjectAltName=%s' "$san")}
    rm "$name.csr"
}
leaf kafka-broker kafka-broker "DNS:kafka,DNS:localhost"
cat kafka-broker.key kafka-broker.crt >kafka-broker.pem
leaf kafka-admin kafka-admin
cat kafka-admin.key kafka-admin.crt >kafka-admin.pem
cat >kafka-admin.properties <<PROPS
security.protocol=SSL
ssl.keystore.type=PEM
ssl.keystore.location=/run/secrets/kafka-admin.pem
ssl.truststore.type=PEM
ssl.truststore.location=/run/secrets/ca.crt
PROPS
for role in ingest-27 ingest-28 transform sink topics-admin; do
    leaf "chitose-$role" "chitose-$role"
done
leaf ingest-https localhost "DNS:localhost,IP:127.0.0.1"

docker run --rm chitose:dev ingest token --prefecture 27 >hub-27.txt
awk '$1 == "token" { print $2 }' hub-27.txt >hub-27.token
awk '$1 == "token_sha256" { print $2 }' hub-27.txt >hub-27.sha256
rm hub-27.txt

pw() { openssl rand -hex 24; }
printf 'MINIO_ROOT_USER=chitose-root\nMINIO_ROOT_PASSWORD=%s\n' "$(pw)" >minio-root.env
sink=$(pw)
{ cat minio-root.env; printf 'SINK_SECRET=%s\nRELEASE_SECRET=%s\nANALYST_SECRET=%s\n' "$sink" "$(pw)" "$(pw)"; } >minio-users.env
printf 'AWS_SECRET_ACCESS_KEY=%s\n' "$sink" >minio-sink.env

rm -f ca.srl
chmod 0400 ./*
chown 1000 kafka-broker.pem kafka-admin.pem kafka-admin.properties 2>/dev/null || true
chown 10001 chitose-*.key ingest-https.key hub-27.sha256 2>/dev/null || true
chmod 0444 ./*.crt
echo "made $(ls | wc -l) files in $(pwd); the hub's token is in hub-27.token" >&2
