/*
 * sign: Standard Webhooks signatures (https://www.standardwebhooks.com)
 * for deliveries to peers with a signing_secret. A signed request carries
 *
 *   webhook-id         the message id: the same for every attempt of one
 *                      delivery, different for every other delivery
 *   webhook-timestamp  unix seconds when the attempt was sent
 *   webhook-signature  "v1," + base64(HMAC-SHA256(key, "id.timestamp.body"))
 *
 * where key is the base64-decoded part of the secret after "whsec_".
 *
 * The message id. Ferry uses "msg_" + 32 hex digits of
 * SHA-256(peer, source, id) (each length-prefixed): the CloudEvents
 * source+id identify an event and the peer name the delivery, so the id is
 * the same for every attempt, after restarts and after a dead letter's
 * replay, and it never collides with another delivery's, even if the
 * spool is wiped and its row ids start again (the receiver may be
 * remembering ids for deduplication: a reused id would make it drop a new
 * message).
 *
 * Threading: a key is created once per peer and then used by one thread
 * (the dispatcher); the functions keep no other state.
 */
#ifndef FERRY_SIGN_H
#define FERRY_SIGN_H

#include <stddef.h>
#include <stdint.h>

/* "msg_" + 32 hex digits + NUL */
#define SIGN_ID_LEN 37
/* "v1," + base64 of 32 bytes (44) + NUL */
#define SIGN_SIGNATURE_LEN 48

struct sign_key;

/**
 * Decode @secret ("whsec_" + standard padded base64 of at least one byte)
 * into a key ready to sign with. NULL with a message in @err on failure
 * (the secret is never quoted in it).
 */
struct sign_key *sign_key_create(const char *secret, char *err,
                                 size_t err_len);

/** Free the key, wiping its bytes. NULL-safe. */
void sign_key_destroy(struct sign_key *k);

/**
 * The webhook-id of the delivery of the event @source/@id to @peer, into
 * @out (NUL-terminated). Returns 0 or -ENOMEM.
 */
int sign_webhook_id(const char *peer, const char *source, const char *id,
                    char out[SIGN_ID_LEN]);

/**
 * The webhook-signature header value for message @msg_id sent at @ts_s
 * (unix seconds) with @body (@len bytes, may be binary), into @out
 * (NUL-terminated). Returns 0, -EINVAL or -ENOMEM.
 */
int sign_webhook(const struct sign_key *k, const char *msg_id, int64_t ts_s,
                 const void *body, size_t len, char out[SIGN_SIGNATURE_LEN]);

#endif
