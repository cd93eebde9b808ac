#!/bin/sh
# Two zones, three principals: the sink writes the pseudonymized bucket
# (lake), the release job reads it and writes the anonymized bucket
# (releases), analysts read releases only. Idempotent.
set -eu
here=/etc/chitose-minio
mc alias set zone http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing zone/lake zone/releases
for who in sink release analyst; do
    mc admin policy create zone "chitose-$who" "$here/$who.json"
done
mc admin user add zone chitose-sink "$SINK_SECRET"
mc admin user add zone chitose-release "$RELEASE_SECRET"
mc admin user add zone chitose-analyst "$ANALYST_SECRET"
for who in sink release analyst; do
    mc admin policy attach zone "chitose-$who" --user "chitose-$who" || true
done
