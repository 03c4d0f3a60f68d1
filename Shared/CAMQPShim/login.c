#include "CAMQPShim.h"

static amqp_table_entry_t boolean_entry(const char *key, int value) {
  amqp_table_entry_t entry;
  entry.key = amqp_cstring_bytes(key);
  entry.value.kind = AMQP_FIELD_KIND_BOOLEAN;
  entry.value.value.boolean = value;
  return entry;
}

amqp_rpc_reply_t bazaar_amqp_login(amqp_connection_state_t state, const char *vhost,
                                   int channel_max, int frame_max, int heartbeat,
                                   const char *connection_name, const char *user,
                                   const char *password) {
  amqp_table_entry_t capabilities[] = {
      boolean_entry("publisher_confirms", 1),
      boolean_entry("basic.nack", 1),
      boolean_entry("consumer_cancel_notify", 1),
      boolean_entry("connection.blocked", 1),
  };
  amqp_table_entry_t properties[2];
  properties[0].key = amqp_cstring_bytes("connection_name");
  properties[0].value.kind = AMQP_FIELD_KIND_UTF8;
  properties[0].value.value.bytes = amqp_cstring_bytes(connection_name);
  properties[1].key = amqp_cstring_bytes("capabilities");
  properties[1].value.kind = AMQP_FIELD_KIND_TABLE;
  properties[1].value.value.table.num_entries = sizeof(capabilities) / sizeof(capabilities[0]);
  properties[1].value.value.table.entries = capabilities;

  amqp_table_t table;
  table.num_entries = 2;
  table.entries = properties;
  return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, &table,
                                    AMQP_SASL_METHOD_PLAIN, user, password);
}
