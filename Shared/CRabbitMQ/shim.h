#ifndef BAZAAR_CRABBITMQ_SHIM_H
#define BAZAAR_CRABBITMQ_SHIM_H
// librabbitmq 0.11 as packaged by Debian 12 (librabbitmq-dev): headers at /usr/include.
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#endif
