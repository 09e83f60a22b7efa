/* chatgate plugin SDK: the normalized message and the reply.
 *
 * A channel plugin turns a platform event into a cg_message_t and hands it to
 * the host with cg_host_api_t.emit_message; the router answers through the
 * channel's cg_channel_ops_t.send with a cg_reply_t. The core never sees a
 * platform's wire format.
 */
#ifndef CHATGATE_MESSAGE_H
#define CHATGATE_MESSAGE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cg_conversation_type_e {
  CG_CONV_DIRECT = 1, /* one user and the bot */
  CG_CONV_GROUP = 2   /* a group or topic chat */
} cg_conversation_type_t;

typedef enum cg_attachment_kind_e {
  CG_ATTACH_OTHER = 0,
  CG_ATTACH_IMAGE = 1,
  CG_ATTACH_FILE = 2,
  CG_ATTACH_AUDIO = 3,
  CG_ATTACH_VIDEO = 4
} cg_attachment_kind_t;

typedef struct cg_attachment_s {
  uint32_t struct_size; /* sizeof(cg_attachment_t) as the writer knew it */
  uint32_t kind;        /* cg_attachment_kind_t */
  cg_str_t url;         /* a fetchable URL, or empty */
  cg_str_t key;         /* a platform key (Feishu image_key, DingTalk downloadCode) */
  cg_str_t mime;        /* e.g. "image/png", or empty when unknown */
  cg_str_t name;        /* a file name, or empty */
} cg_attachment_t;

/* An inbound message. Every view is borrowed for the duration of the
 * emit_message call; the host copies what it keeps. */
typedef struct cg_message_s {
  uint32_t struct_size;       /* sizeof(cg_message_t) as the writer knew it */
  uint32_t conversation_type; /* cg_conversation_type_t */
  cg_str_t id;                /* platform message id; the router dedupes on (channel, id) */
  cg_str_t conversation_id;   /* platform conversation/chat id */
  cg_str_t sender_id;         /* stable platform user id */
  cg_str_t sender_name;       /* display name, or empty */
  cg_str_t text;              /* plain text, mentions of the bot removed */
  int32_t mentioned;          /* non-zero when the bot was @-mentioned */
  uint32_t attachment_count;
  const cg_attachment_t *attachments; /* attachment_count entries, or NULL */
  int64_t timestamp_ms;       /* platform timestamp (Unix ms), 0 when unknown */
  /* Opaque to the host, meaningful to the channel: whatever the channel
   * needs to answer this message (a message id, a session webhook...). It is
   * a string so a message can be queued durably and answered by another
   * process. Given back verbatim in cg_reply_t.reply_token. */
  cg_str_t reply_token;
  /* What the router dedupes this message on, per channel instance: the
   * platform's delivery id that a retry or a reconnect repeats (Feishu's
   * event_id, DingTalk's msgId), so the channel need not dedupe it itself
   * and each message costs one dedupe. Empty: the router dedupes on `id`
   * (as before 1.4, and for writers of an older struct_size); set both
   * empty to skip dedupe. Borrowed like every view here. (since 1.4) */
  cg_str_t dedupe_key;
} cg_message_t;

typedef enum cg_reply_format_e {
  CG_REPLY_TEXT = 0,
  CG_REPLY_MARKDOWN = 1
} cg_reply_format_t;

/* Flags on a reply. A streamed answer is a series of PARTIAL replies, each
 * holding the full text so far, ended by one FINAL reply. A channel instance
 * without CG_CHANNEL_CAP_STREAMING (in its descriptor, or cleared at init
 * with set_capabilities, since 1.4) only ever receives a single FINAL reply. */
#define CG_REPLY_PARTIAL 0x1u /* more updates follow */
#define CG_REPLY_FINAL 0x2u   /* the last update for this answer */
#define CG_REPLY_ERROR 0x4u   /* the answer is an error notice for the user */

typedef struct cg_button_s {
  uint32_t struct_size;
  cg_str_t label; /* what the user sees */
  cg_str_t value; /* sent back as an action when pressed, or empty */
  cg_str_t url;   /* opened when pressed, or empty */
} cg_button_t;

/* An outbound reply. Borrowed for the duration of the send call. */
typedef struct cg_reply_s {
  uint32_t struct_size;
  uint32_t format;            /* cg_reply_format_t */
  uint32_t flags;             /* CG_REPLY_* */
  uint32_t sequence;          /* 1, 2, 3... per answer; increases with every update */
  cg_str_t conversation_id;   /* as in the inbound message */
  uint32_t conversation_type; /* cg_conversation_type_t */
  uint32_t button_count;
  cg_str_t in_reply_to;       /* inbound message id, or empty for a proactive send */
  cg_str_t reply_token;       /* inbound reply_token, or empty for a proactive send */
  cg_str_t recipient_id;      /* the inbound sender (to @-mention in groups), or empty */
  cg_str_t text;              /* full text so far */
  const cg_button_t *buttons; /* button_count entries, or NULL */
  uint64_t answer_id;         /* same for every update of one answer */
  /* since 1.6: which attempt at answering in_reply_to this is: 1 (or 0,
   * from an older host) the first. Above 1 an earlier attempt, perhaps on
   * an instance that died (router.queue), may have started an answer the
   * user sees: a channel that shows answers in place (a streaming card)
   * continues that one rather than starting a second. */
  uint32_t delivery;
} cg_reply_t;

#ifdef __cplusplus
}
#endif

#endif /* CHATGATE_MESSAGE_H */
