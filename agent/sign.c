/*
 * sign: Standard Webhooks signing with OpenSSL 3's EVP_MAC (see sign.h).
 *
 * A key is one HMAC-SHA256 context keyed at creation; each signature
 * duplicates it (cheaper than re-keying; the template never changes). The
 * signed content "id.timestamp.body" is fed in pieces, so the body is
 * never copied.
 */
#include "sign.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "buf.h"
#include "hdrcode.h"

#define SECRET_PREFIX "whsec_"
/* Far above what anyone configures (Standard Webhooks: 24 to 64 bytes). */
#define KEY_MAX 4096

struct sign_key {
    EVP_MAC *mac;
    EVP_MAC_CTX *tmpl; /* keyed, never finalised */
};

void sign_key_destroy(struct sign_key *k)
{
    if (!k)
        return;
    EVP_MAC_CTX_free(k->tmpl); /* clears the key material */
    EVP_MAC_free(k->mac);
    free(k);
}

/* Key @k->tmpl with @key. 0 or -ENOMEM. */
static int key_template(struct sign_key *k, const struct buf *key)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    k->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    k->tmpl = k->mac ? EVP_MAC_CTX_new(k->mac) : NULL;
    if (!k->tmpl ||
        !EVP_MAC_init(k->tmpl, (const unsigned char *)key->data, key->len,
                      params))
        return -ENOMEM;
    return 0;
}

struct sign_key *sign_key_create(const char *secret, char *err,
                                 size_t err_len)
{
    struct sign_key *k = NULL;
    struct buf key;
    buf_init(&key, KEY_MAX);
    size_t plen = sizeof(SECRET_PREFIX) - 1;
    if (!secret || strncmp(secret, SECRET_PREFIX, plen) != 0 ||
        base64_decode(secret + plen, strlen(secret + plen), &key) != 0 ||
        key.len == 0) {
        snprintf(err, err_len, "signing_secret: must be \"" SECRET_PREFIX
                               "\" followed by standard base64");
        goto out;
    }
    k = calloc(1, sizeof(*k));
    if (!k || key_template(k, &key) != 0) {
        snprintf(err, err_len, "signing_secret: cannot set up HMAC-SHA256");
        sign_key_destroy(k);
        k = NULL;
    }
out:
    if (key.data)
        OPENSSL_cleanse(key.data, key.cap);
    buf_free(&key);
    return k;
}

/* Feed @s with its length in front, so no two field lists collide. */
static int digest_field(EVP_MD_CTX *md, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    unsigned char len[8];
    for (size_t i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
    return EVP_DigestUpdate(md, len, sizeof(len)) &&
           (!n || EVP_DigestUpdate(md, s, n));
}

int sign_webhook_id(const char *peer, const char *source, const char *id,
                    char out[SIGN_ID_LEN])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
             digest_field(md, peer) && digest_field(md, source) &&
             digest_field(md, id) && EVP_DigestFinal_ex(md, h, &hlen) &&
             hlen >= 16;
    EVP_MD_CTX_free(md);
    if (!ok)
        return -ENOMEM;
    memcpy(out, "msg_", 4);
    for (size_t i = 0; i < 16; i++) {
        out[4 + 2 * i] = hex[h[i] >> 4];
        out[5 + 2 * i] = hex[h[i] & 0xf];
    }
    out[SIGN_ID_LEN - 1] = '\0';
    return 0;
}

int sign_webhook(const struct sign_key *k, const char *msg_id, int64_t ts_s,
                 const void *body, size_t len, char out[SIGN_SIGNATURE_LEN])
{
    if (!k || !msg_id || (len && !body))
        return -EINVAL;
    char ts[24];
    int tn = snprintf(ts, sizeof(ts), "%" PRId64, ts_s);
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mlen = 0;
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(k->tmpl);
    int ok = c && tn > 0 &&
             EVP_MAC_update(c, (const unsigned char *)msg_id,
                            strlen(msg_id)) &&
             EVP_MAC_update(c, (const unsigned char *)".", 1) &&
             EVP_MAC_update(c, (const unsigned char *)ts, (size_t)tn) &&
             EVP_MAC_update(c, (const unsigned char *)".", 1) &&
             (!len || EVP_MAC_update(c, body, len)) &&
             EVP_MAC_final(c, mac, &mlen, sizeof(mac)) && mlen == 32;
    EVP_MAC_CTX_free(c);
    if (!ok)
        return -ENOMEM;
    memcpy(out, "v1,", 3);
    /* 32 bytes -> 44 characters and a NUL: fits SIGN_SIGNATURE_LEN - 3 */
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)mlen);
    return 0;
}
