/* The ABI 1.0 layout, frozen: every offset and size a plugin built against
 * SDK 1.0 relies on (x86_64 / LP64). A header change that moves a field
 * fails this build; fix the header, or bump CG_ABI_MAJOR and rewrite this
 * file on purpose. Fields added in 1.N go below with their own checks.
 * Compiled as C and as C++ so both languages see the same layout. */
#include <chatgate/chatgate.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
#define CG_STATIC_ASSERT static_assert
#else
#define CG_STATIC_ASSERT _Static_assert
#endif

#define CG_ABI_CHECK(type, field, off) \
  CG_STATIC_ASSERT(offsetof(type, field) == (off), #type "." #field " moved")
#define CG_ABI_SIZE(type, size) CG_STATIC_ASSERT(sizeof(type) == (size), #type " changed size")

CG_STATIC_ASSERT(CG_ABI_MAJOR == 1, "this file describes ABI 1.x");
CG_STATIC_ASSERT(sizeof(void *) == 8, "the frozen layout is LP64's");

CG_ABI_SIZE(cg_str_t, 16);
CG_ABI_CHECK(cg_str_t, ptr, 0);
CG_ABI_CHECK(cg_str_t, len, 8);
CG_ABI_SIZE(cg_attachment_t, 72);
CG_ABI_CHECK(cg_attachment_t, kind, 4);
CG_ABI_CHECK(cg_attachment_t, url, 8);
CG_ABI_CHECK(cg_attachment_t, key, 24);
CG_ABI_CHECK(cg_attachment_t, mime, 40);
CG_ABI_CHECK(cg_attachment_t, name, 56);
/* 1.0 ended at 128; 1.4 appended dedupe_key (below). */
CG_ABI_SIZE(cg_message_t, 144);
CG_ABI_CHECK(cg_message_t, conversation_type, 4);
CG_ABI_CHECK(cg_message_t, id, 8);
CG_ABI_CHECK(cg_message_t, conversation_id, 24);
CG_ABI_CHECK(cg_message_t, sender_id, 40);
CG_ABI_CHECK(cg_message_t, sender_name, 56);
CG_ABI_CHECK(cg_message_t, text, 72);
CG_ABI_CHECK(cg_message_t, mentioned, 88);
CG_ABI_CHECK(cg_message_t, attachment_count, 92);
CG_ABI_CHECK(cg_message_t, attachments, 96);
CG_ABI_CHECK(cg_message_t, timestamp_ms, 104);
CG_ABI_CHECK(cg_message_t, reply_token, 112);
CG_ABI_SIZE(cg_button_t, 56);
CG_ABI_CHECK(cg_button_t, label, 8);
CG_ABI_CHECK(cg_button_t, value, 24);
CG_ABI_CHECK(cg_button_t, url, 40);
CG_ABI_SIZE(cg_reply_t, 128);
CG_ABI_CHECK(cg_reply_t, format, 4);
CG_ABI_CHECK(cg_reply_t, flags, 8);
CG_ABI_CHECK(cg_reply_t, sequence, 12);
CG_ABI_CHECK(cg_reply_t, conversation_id, 16);
CG_ABI_CHECK(cg_reply_t, conversation_type, 32);
CG_ABI_CHECK(cg_reply_t, button_count, 36);
CG_ABI_CHECK(cg_reply_t, in_reply_to, 40);
CG_ABI_CHECK(cg_reply_t, reply_token, 56);
CG_ABI_CHECK(cg_reply_t, recipient_id, 72);
CG_ABI_CHECK(cg_reply_t, text, 88);
CG_ABI_CHECK(cg_reply_t, buttons, 104);
CG_ABI_CHECK(cg_reply_t, answer_id, 112);
CG_ABI_CHECK(cg_reply_t, delivery, 120);
CG_ABI_SIZE(cg_http_header_t, 32);
CG_ABI_CHECK(cg_http_header_t, value, 16);
CG_ABI_SIZE(cg_http_request_t, 96);
CG_ABI_CHECK(cg_http_request_t, header_count, 4);
CG_ABI_CHECK(cg_http_request_t, method, 8);
CG_ABI_CHECK(cg_http_request_t, path, 24);
CG_ABI_CHECK(cg_http_request_t, query, 40);
CG_ABI_CHECK(cg_http_request_t, headers, 56);
CG_ABI_CHECK(cg_http_request_t, body, 64);
CG_ABI_CHECK(cg_http_request_t, remote_addr, 80);
/* The 1.0 table ended at 224 bytes; 1.1 appended after it. */
CG_STATIC_ASSERT(offsetof(cg_host_api_t, metric_observe) + sizeof(void *) == 224,
                 "cg_host_api_t's 1.0 part changed size");
CG_ABI_CHECK(cg_host_api_t, abi_major, 4);
CG_ABI_CHECK(cg_host_api_t, abi_minor, 8);
CG_ABI_CHECK(cg_host_api_t, instance_name, 16);
CG_ABI_CHECK(cg_host_api_t, log, 24);
CG_ABI_CHECK(cg_host_api_t, set_error, 32);
CG_ABI_CHECK(cg_host_api_t, set_state, 40);
CG_ABI_CHECK(cg_host_api_t, now_ms, 48);
CG_ABI_CHECK(cg_host_api_t, config_string, 56);
CG_ABI_CHECK(cg_host_api_t, config_int, 64);
CG_ABI_CHECK(cg_host_api_t, config_double, 72);
CG_ABI_CHECK(cg_host_api_t, config_bool, 80);
CG_ABI_CHECK(cg_host_api_t, config_list_size, 88);
CG_ABI_CHECK(cg_host_api_t, config_list_item, 96);
CG_ABI_CHECK(cg_host_api_t, post, 104);
CG_ABI_CHECK(cg_host_api_t, defer, 112);
CG_ABI_CHECK(cg_host_api_t, timer_start, 120);
CG_ABI_CHECK(cg_host_api_t, timer_stop, 128);
CG_ABI_CHECK(cg_host_api_t, queue_work, 136);
CG_ABI_CHECK(cg_host_api_t, emit_message, 144);
CG_ABI_CHECK(cg_host_api_t, http_route_add, 152);
CG_ABI_CHECK(cg_host_api_t, http_respond, 160);
CG_ABI_CHECK(cg_host_api_t, cache_get, 168);
CG_ABI_CHECK(cg_host_api_t, cache_set, 176);
CG_ABI_CHECK(cg_host_api_t, cache_set_nx, 184);
CG_ABI_CHECK(cg_host_api_t, cache_del, 192);
CG_ABI_CHECK(cg_host_api_t, metric_counter_add, 200);
CG_ABI_CHECK(cg_host_api_t, metric_gauge_set, 208);
CG_ABI_CHECK(cg_host_api_t, metric_observe, 216);
CG_ABI_SIZE(cg_config_field_t, 64);
CG_ABI_CHECK(cg_config_field_t, type, 4);
CG_ABI_CHECK(cg_config_field_t, flags, 8);
CG_ABI_CHECK(cg_config_field_t, key, 16);
CG_ABI_CHECK(cg_config_field_t, default_value, 24);
CG_ABI_CHECK(cg_config_field_t, description, 32);
CG_ABI_CHECK(cg_config_field_t, choices, 40);
CG_ABI_CHECK(cg_config_field_t, min, 48);
CG_ABI_CHECK(cg_config_field_t, max, 56);
CG_ABI_SIZE(cg_channel_ops_t, 24);
CG_ABI_CHECK(cg_channel_ops_t, send, 8);
CG_ABI_CHECK(cg_channel_ops_t, quiesce, 16); /* since 1.7 */
CG_ABI_SIZE(cg_model_turn_t, 24);
CG_ABI_CHECK(cg_model_turn_t, role, 4);
CG_ABI_CHECK(cg_model_turn_t, content, 8);
CG_ABI_SIZE(cg_model_request_t, 80);
CG_ABI_CHECK(cg_model_request_t, turn_count, 4);
CG_ABI_CHECK(cg_model_request_t, turns, 8);
CG_ABI_CHECK(cg_model_request_t, channel, 16);
CG_ABI_CHECK(cg_model_request_t, conversation_id, 32);
CG_ABI_CHECK(cg_model_request_t, user_id, 48);
CG_ABI_CHECK(cg_model_request_t, stream, 64);
CG_ABI_CHECK(cg_model_request_t, timeout_ms, 72);
CG_ABI_SIZE(cg_model_sink_t, 32);
CG_ABI_CHECK(cg_model_sink_t, arg, 8);
CG_ABI_CHECK(cg_model_sink_t, on_delta, 16);
CG_ABI_CHECK(cg_model_sink_t, on_done, 24);
CG_ABI_SIZE(cg_model_ops_t, 24);
CG_ABI_CHECK(cg_model_ops_t, generate, 8);
CG_ABI_CHECK(cg_model_ops_t, cancel, 16);
CG_ABI_SIZE(cg_cache_ops_t, 48);
CG_ABI_CHECK(cg_cache_ops_t, queue, 40);
CG_ABI_SIZE(cg_queue_entry_t, 48);
CG_ABI_CHECK(cg_queue_entry_t, partition, 4);
CG_ABI_CHECK(cg_queue_entry_t, id, 8);
CG_ABI_CHECK(cg_queue_entry_t, payload, 24);
CG_ABI_CHECK(cg_queue_entry_t, deliveries, 40);
CG_ABI_SIZE(cg_queue_stats_t, 40);
CG_ABI_CHECK(cg_queue_stats_t, length, 8);
CG_ABI_CHECK(cg_queue_stats_t, dead_letters, 32);
CG_ABI_SIZE(cg_queue_ops_t, 88);
CG_ABI_CHECK(cg_queue_ops_t, enqueue, 8);
CG_ABI_CHECK(cg_queue_ops_t, lease, 16);
CG_ABI_CHECK(cg_queue_ops_t, release, 24);
CG_ABI_CHECK(cg_queue_ops_t, read, 32);
CG_ABI_CHECK(cg_queue_ops_t, claim, 40);
CG_ABI_CHECK(cg_queue_ops_t, retry, 48);
CG_ABI_CHECK(cg_queue_ops_t, ack, 56);
CG_ABI_CHECK(cg_queue_ops_t, dead_letter, 64);
CG_ABI_CHECK(cg_queue_ops_t, members, 72);
CG_ABI_CHECK(cg_queue_ops_t, stats, 80);
CG_ABI_CHECK(cg_cache_ops_t, get, 8);
CG_ABI_CHECK(cg_cache_ops_t, set, 16);
CG_ABI_CHECK(cg_cache_ops_t, set_nx, 24);
CG_ABI_CHECK(cg_cache_ops_t, del, 32);
CG_ABI_SIZE(cg_plugin_t, 104);
CG_ABI_CHECK(cg_plugin_t, abi_major, 4);
CG_ABI_CHECK(cg_plugin_t, abi_minor, 8);
CG_ABI_CHECK(cg_plugin_t, kind, 12);
CG_ABI_CHECK(cg_plugin_t, name, 16);
CG_ABI_CHECK(cg_plugin_t, version, 24);
CG_ABI_CHECK(cg_plugin_t, description, 32);
CG_ABI_CHECK(cg_plugin_t, capabilities, 40);
CG_ABI_CHECK(cg_plugin_t, config_fields, 48);
CG_ABI_CHECK(cg_plugin_t, config_field_count, 56);
CG_ABI_CHECK(cg_plugin_t, init, 64);
CG_ABI_CHECK(cg_plugin_t, start, 72);
CG_ABI_CHECK(cg_plugin_t, stop, 80);
CG_ABI_CHECK(cg_plugin_t, destroy, 88);
CG_ABI_CHECK(cg_plugin_t, ops, 96);

/* --- since 1.1: outbound HTTP ---------------------------------------- */
CG_ABI_CHECK(cg_host_api_t, http_request, 224);
CG_ABI_CHECK(cg_host_api_t, http_cancel, 232);
CG_ABI_CHECK(cg_host_api_t, fd_watch_start, 240);
CG_ABI_CHECK(cg_host_api_t, fd_watch_update, 248);
CG_ABI_CHECK(cg_host_api_t, fd_watch_stop, 256);
CG_ABI_SIZE(cg_http_client_request_t, 80);
CG_ABI_CHECK(cg_http_client_request_t, header_count, 4);
CG_ABI_CHECK(cg_http_client_request_t, method, 8);
CG_ABI_CHECK(cg_http_client_request_t, url, 24);
CG_ABI_CHECK(cg_http_client_request_t, headers, 40);
CG_ABI_CHECK(cg_http_client_request_t, body, 48);
CG_ABI_CHECK(cg_http_client_request_t, timeout_ms, 64);
CG_ABI_CHECK(cg_http_client_request_t, connect_timeout_ms, 72);
CG_ABI_SIZE(cg_http_client_response_t, 56);
CG_ABI_CHECK(cg_http_client_response_t, header_count, 4);
CG_ABI_CHECK(cg_http_client_response_t, status, 8);
CG_ABI_CHECK(cg_http_client_response_t, headers, 16);
CG_ABI_CHECK(cg_http_client_response_t, body, 24);
CG_ABI_CHECK(cg_http_client_response_t, error, 40);

/* --- since 1.2: WebSocket client (the 1.1 table ended at 264) ----------- */
CG_ABI_CHECK(cg_host_api_t, ws_connect, 264);
CG_ABI_CHECK(cg_host_api_t, ws_send, 272);
CG_ABI_CHECK(cg_host_api_t, ws_ping, 280);
CG_ABI_CHECK(cg_host_api_t, ws_close, 288);
CG_ABI_CHECK(cg_host_api_t, backoff_ms, 296);
CG_ABI_SIZE(cg_ws_connect_t, 56);
CG_ABI_CHECK(cg_ws_connect_t, header_count, 4);
CG_ABI_CHECK(cg_ws_connect_t, url, 8);
CG_ABI_CHECK(cg_ws_connect_t, headers, 24);
CG_ABI_CHECK(cg_ws_connect_t, connect_timeout_ms, 32);
CG_ABI_CHECK(cg_ws_connect_t, ping_interval_ms, 40);
CG_ABI_CHECK(cg_ws_connect_t, max_message_bytes, 48);
CG_ABI_SIZE(cg_ws_event_t, 48);
CG_ABI_CHECK(cg_ws_event_t, type, 4);
CG_ABI_CHECK(cg_ws_event_t, ws_id, 8);
CG_ABI_CHECK(cg_ws_event_t, opcode, 16);
CG_ABI_CHECK(cg_ws_event_t, result, 20);
CG_ABI_CHECK(cg_ws_event_t, close_code, 24);
CG_ABI_CHECK(cg_ws_event_t, http_status, 28);
CG_ABI_CHECK(cg_ws_event_t, data, 32);
CG_STATIC_ASSERT(CG_WS_TEXT == 1 && CG_WS_BINARY == 2 && CG_WS_OPEN == 1 && CG_WS_MESSAGE == 2 &&
                     CG_WS_CLOSED == 3,
                 "WebSocket constants renumbered");

/* --- since 1.3: channel drops, proactive sends (1.2 ended at 304) ------ */
CG_ABI_CHECK(cg_host_api_t, message_dropped, 304);
CG_ABI_CHECK(cg_host_api_t, send_message, 312);

/* --- since 1.4: per-instance capabilities, the channel's dedupe key ---- */
CG_ABI_CHECK(cg_host_api_t, set_capabilities, 320);
CG_ABI_CHECK(cg_host_api_t, log_throttled, 328);
CG_ABI_CHECK(cg_host_api_t, emit_message_durable, 336); /* since 1.5 */
CG_ABI_CHECK(cg_host_api_t, user_text, 344);            /* since 1.8 */
CG_ABI_SIZE(cg_host_api_t, 352);
CG_ABI_CHECK(cg_message_t, dedupe_key, 128);

/* Error codes are part of the ABI too. */
CG_STATIC_ASSERT(CG_EINVAL == -1 && CG_EBUSY == -5 && CG_ECANCELED == -7 && CG_EAGAIN == -16,
                 "error codes renumbered");
CG_STATIC_ASSERT(CG_KIND_CHANNEL == 1 && CG_KIND_MODEL == 2 && CG_KIND_CACHE == 3,
                 "plugin kinds renumbered");

int main(void) {
  printf("ABI %d.%d layout: all static checks compiled\n", CG_ABI_MAJOR, CG_ABI_MINOR);
  return 0;
}
