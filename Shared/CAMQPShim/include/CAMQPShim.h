#ifndef BAZAAR_CAMQPSHIM_H
#define BAZAAR_CAMQPSHIM_H
// The one librabbitmq entry point Swift can't call: amqp_login_with_properties is variadic
// (its SASL arguments follow `...`). This shim fixes the method to PLAIN and adds the client
// properties the broker shows and uses.
#include <amqp.h>

/// Logs in with SASL PLAIN and announces `connection_name` (shown by the broker's management UI
/// and `rabbitmqctl list_connections client_properties`) plus the capabilities our client
/// handles: publisher confirms with basic.nack, consumer cancel notifications and
/// connection.blocked. librabbitmq merges these with its own default client properties.
amqp_rpc_reply_t bazaar_amqp_login(amqp_connection_state_t state, const char *vhost,
                                   int channel_max, int frame_max, int heartbeat,
                                   const char *connection_name, const char *user,
                                   const char *password);

#endif
