#!/usr/bin/env sh
# The rules of ./acl for Mosquitto's dynamic security plugin, applied to a running broker with
# mosquitto_ctrl: roles "twinguard" and "twin-app", and per device argument a client with a
# role of its own ("device-<id>"): Mosquitto 2.0's plugin has no %u in its ACLs.
#
#   CTRL="mosquitto_ctrl -h 127.0.0.1 -p 1883 -u admin -P admin-password" \
#   TWINGUARD_PASSWORD=… TWIN_APP_PASSWORD=… ./dynamic-security.sh d1:password1 d2:password2
#
# Later devices: run it again with TWINGUARD_PASSWORD= TWIN_APP_PASSWORD= left empty to add
# devices only. Tested as is against a real Mosquitto: host/cli/tests/all/acl.rs.
set -eu
: "${CTRL:?set CTRL to the mosquitto_ctrl command with the admin credentials}"
: "${TWINGUARD_PASSWORD?set TWINGUARD_PASSWORD (empty: add devices only)}"
: "${TWIN_APP_PASSWORD?set TWIN_APP_PASSWORD (empty: add devices only)}"
# mosquitto_ctrl warns on every call over plain TCP; show its output only when it fails.
ctrl() {
    out=$($CTRL dynsec "$@" 2>&1) || { echo "mosquitto_ctrl dynsec $1 $2: $out" >&2; exit 1; }
    case "$out" in *Error*) echo "mosquitto_ctrl dynsec $1 $2: $out" >&2; exit 1 ;; esac
}

for device in "$@"; do
    id=${device%%:*}
    # A device writes its own telemetry and reads its own commands, nothing else.
    ctrl createRole "device-$id"
    ctrl addRoleACL "device-$id" publishClientSend "devices/$id/telemetry" allow
    ctrl addRoleACL "device-$id" subscribeLiteral "devices/$id/commands" allow
    ctrl createClient "$id" -p "${device#*:}"
    ctrl addClientRole "$id" "device-$id"
done
[ -n "$TWINGUARD_PASSWORD" ] || exit 0

# twinguard reads every device's telemetry and writes the twin and alert topics; on the
# command path it reads the twin's commands and writes them on to the device.
ctrl createRole twinguard
ctrl addRoleACL twinguard subscribePattern 'devices/+/telemetry' allow
ctrl addRoleACL twinguard publishClientSend 'twin/+/telemetry' allow
ctrl addRoleACL twinguard publishClientSend 'twinguard/alerts' allow
ctrl addRoleACL twinguard subscribePattern 'twin/+/commands' allow
ctrl addRoleACL twinguard publishClientSend 'devices/+/commands' allow
ctrl addRoleACL twinguard subscribeLiteral '$SYS/broker/publish/messages/dropped' allow

# The twin application reads what twinguard forwarded and the alerts, and sends commands
# through twinguard.
ctrl createRole twin-app
ctrl addRoleACL twin-app subscribePattern 'twin/+/telemetry' allow
ctrl addRoleACL twin-app subscribePattern 'twinguard/alerts' allow
ctrl addRoleACL twin-app publishClientSend 'twin/+/commands' allow

ctrl createClient twinguard -p "$TWINGUARD_PASSWORD"
ctrl addClientRole twinguard twinguard
ctrl createClient twin-app -p "$TWIN_APP_PASSWORD"
ctrl addClientRole twin-app twin-app
