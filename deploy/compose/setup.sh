#!/bin/sh
# Set-up of the compose deployment, run by its `setup` service in the
# jembatan image.
#
#   setup.sh            the federation's CA (in /var/lib/jembatan-ca, a
#                       volume only this service mounts), every certificate
#                       the services and the demo agencies need, and the
#                       demo's synthetic agency databases; the certificates,
#                       keys and revocation list, but not the CA's key, are
#                       copied to /var/lib/jembatan/certs for the services.
#                       Does nothing when the CA exists.
#   setup.sh renew-crl  signs the revocation list again for 30 days and
#                       copies it to the services, who reload it within
#                       seconds (run it weekly:
#                       docker compose -f deploy/compose.yaml run --rm setup renew-crl)
set -eu
home=/var/lib/jembatan
ca=/var/lib/jembatan-ca
certs=$home/certs
publish() {
    mkdir -p "$certs"
    for f in "$ca"/*.pem; do
        [ "$(basename "$f")" = ca-key.pem ] || cp "$f" "$certs/"
    done
}
if [ "${1:-}" = renew-crl ]; then
    jembatan pki renew-crl --ca "$ca" --days 30
    publish
    exit 0
fi
if [ -f "$ca/ca.pem" ]; then
    echo "set-up already done: $ca/ca.pem exists"
    exit 0
fi
umask 077
jembatan pki init --dir "$ca"
jembatan pki issue --dir "$ca" --role broker \
    --host broker-1 --host broker-2 --host localhost --host 127.0.0.1
for agency in disdukcapil dpmptsp; do
    jembatan pki issue --dir "$ca" --role adapter --agency "$agency" \
        --host "adapter-$agency"
done
for agency in disdukcapil dpmptsp dinsos dinkes lpse bpn; do
    jembatan pki issue --dir "$ca" --role agency --agency "$agency"
done
jembatan pki issue --dir "$ca" --role integrator --agency dinsos
jembatan pki issue --dir "$ca" --role auditor --name auditor
jembatan pki issue --dir "$ca" --role operator --name operator
# the demo's synthetic agency databases (its own run, on loopback inside
# this container, is thrown away; only the databases are kept)
jembatan demo --keep "$home/demo" --residents 20000
mkdir -p "$home/data"
cp "$home/demo/data/disdukcapil.db" "$home/demo/data/dpmptsp.db" "$home/data/"
rm -rf "$home/demo"
publish
echo "set-up done: certificates in $certs, agency databases in $home/data"
