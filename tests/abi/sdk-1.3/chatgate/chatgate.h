/* chatgate plugin SDK, version 1: the one header a plugin includes. */
#ifndef CHATGATE_CHATGATE_H
#define CHATGATE_CHATGATE_H

#include "common.h"
#include "host.h"
#include "message.h"
#include "plugin.h"

#endif /* CHATGATE_CHATGATE_H */
