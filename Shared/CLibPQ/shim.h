#ifndef BAZAAR_CLIBPQ_SHIM_H
#define BAZAAR_CLIBPQ_SHIM_H
// libpq from Debian 12's libpq-dev. libpq-fe.h has no variadic functions; its function-like
// macros (PQsetdb) are not used: connections go through PQconnectdbParams.
#include <libpq-fe.h>
#endif
