/*
 * test_sign: Standard Webhooks signing. The official test vector (checked
 * independently with Python's hmac module before use), agreement with a
 * one-shot HMAC over the concatenated content for binary bodies, secret
 * parsing, and the properties of the webhook-id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sign.h"

/* https://github.com/standard-webhooks/standard-webhooks (spec examples) */
#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS 1614265330
#define VEC_BODY "{\"test\": 2432232314}"
#define VEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static struct sign_key *key_of(const char *secret)
{
    char err[160] = "";
    struct sign_key *k = sign_key_create(secret, err, sizeof(err));
    if (!k)
        fail_msg("sign_key_create: %s", err);
    return k;
}

static void test_sign_standard_webhooks_vector(void **state)
{
    (void)state;
    struct sign_key *k = key_of(VEC_SECRET);
    char sig[SIGN_SIGNATURE_LEN];
    assert_int_equal(sign_webhook(k, VEC_ID, VEC_TS, VEC_BODY,
                                  strlen(VEC_BODY), sig),
                     0);
    assert_string_equal(sig, VEC_SIG);
    sign_key_destroy(k);
}

/* "v1," + base64(HMAC-SHA256(key, content)) computed the plain way. */
static void expected(const unsigned char *key, size_t key_len,
                     const char *id, long long ts, const unsigned char *body,
                     size_t len, char *out, size_t out_len)
{
    char head[128];
    int hn = snprintf(head, sizeof(head), "%s.%lld.", id, ts);
    unsigned char *msg = malloc((size_t)hn + len + 1);
    assert_non_null(msg);
    memcpy(msg, head, (size_t)hn);
    if (len)
        memcpy(msg + hn, body, len);
    unsigned char mac[32];
    unsigned int mlen = 0;
    assert_non_null(HMAC(EVP_sha256(), key, (int)key_len, msg,
                         (size_t)hn + len, mac, &mlen));
    assert_int_equal(mlen, 32);
    free(msg);
    assert_true(out_len >= 48);
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, 32);
}

static void test_sign_round_trip_binary_bodies(void **state)
{
    (void)state;
    /* whsec_ + base64 of the 24 bytes 0x00..0x17 */
    static const char secret[] = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX";
    unsigned char key[24];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (unsigned char)i;
    struct sign_key *k = key_of(secret);
    unsigned char body[4096];
    unsigned seed = 7;
    for (size_t len = 0; len <= sizeof(body); len = len * 3 + 1) {
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            body[i] = (unsigned char)(seed >> 16); /* NULs included */
        }
        char got[SIGN_SIGNATURE_LEN], want[SIGN_SIGNATURE_LEN];
        assert_int_equal(sign_webhook(k, "msg_x", 1700000000 + (long)len,
                                      body, len, got),
                         0);
        expected(key, sizeof(key), "msg_x", 1700000000 + (long long)len, body,
                 len, want, sizeof(want));
        assert_string_equal(got, want);
    }
    sign_key_destroy(k);
}

static void test_sign_timestamp_and_id_change_signature(void **state)
{
    (void)state;
    struct sign_key *k = key_of(VEC_SECRET);
    char a[SIGN_SIGNATURE_LEN], b[SIGN_SIGNATURE_LEN], c[SIGN_SIGNATURE_LEN];
    assert_int_equal(sign_webhook(k, VEC_ID, VEC_TS, "x", 1, a), 0);
    assert_int_equal(sign_webhook(k, VEC_ID, VEC_TS + 1, "x", 1, b), 0);
    assert_int_equal(sign_webhook(k, "msg_other", VEC_TS, "x", 1, c), 0);
    assert_string_not_equal(a, b);
    assert_string_not_equal(a, c);
    /* and the same input signs the same (the key is reusable) */
    assert_int_equal(sign_webhook(k, VEC_ID, VEC_TS + 1, "x", 1, c), 0);
    assert_string_equal(b, c);
    sign_key_destroy(k);
}

static void test_sign_empty_body(void **state)
{
    (void)state;
    struct sign_key *k = key_of(VEC_SECRET);
    char got[SIGN_SIGNATURE_LEN], want[SIGN_SIGNATURE_LEN];
    assert_int_equal(sign_webhook(k, VEC_ID, VEC_TS, NULL, 0, got), 0);
    unsigned char key[64];
    int klen = EVP_DecodeBlock(key, (const unsigned char *)VEC_SECRET + 6,
                               (int)strlen(VEC_SECRET) - 6);
    assert_int_equal(klen, 24); /* 32 characters, no padding */
    expected(key, (size_t)klen, VEC_ID, VEC_TS, NULL, 0, want, sizeof(want));
    assert_string_equal(got, want);
    sign_key_destroy(k);
}

static void test_sign_key_rejects_bad_secrets(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", /* no prefix */
        "whsec_",                           /* nothing after it */
        "whsec_abc",                        /* not a multiple of 4 */
        "whsec_ab!d",                       /* not base64 */
        "whsec_====",
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[160] = "";
        struct sign_key *k = sign_key_create(bad[i], err, sizeof(err));
        if (k)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(strstr(err, "whsec_"));
        if (strlen(bad[i]) > 8) /* the secret is never quoted */
            assert_null(strstr(err, bad[i] + 6));
    }
    char err[160] = "";
    assert_null(sign_key_create(NULL, err, sizeof(err)));
    sign_key_destroy(NULL);
}

static bool is_id(const char *id)
{
    if (strlen(id) != SIGN_ID_LEN - 1 || strncmp(id, "msg_", 4) != 0)
        return false;
    for (const char *p = id + 4; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static void test_sign_webhook_id_stable_per_delivery(void **state)
{
    (void)state;
    char a[SIGN_ID_LEN], b[SIGN_ID_LEN];
    assert_int_equal(sign_webhook_id("inventory", "/orders", "o-1", a), 0);
    assert_int_equal(sign_webhook_id("inventory", "/orders", "o-1", b), 0);
    assert_true(is_id(a));
    assert_string_equal(a, b);
    /* another peer, source or id: another message */
    static const char *const other[][3] = {
        {"audit", "/orders", "o-1"},
        {"inventory", "/order", "o-1"},
        {"inventory", "/orders", "o-2"},
        {"inventory", "/orderso", "-1"}, /* the same bytes, split otherwise */
        {"inventory/orders", "", "o-1"},
    };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        assert_int_equal(
            sign_webhook_id(other[i][0], other[i][1], other[i][2], b), 0);
        assert_true(is_id(b));
        assert_string_not_equal(a, b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_standard_webhooks_vector),
        cmocka_unit_test(test_sign_round_trip_binary_bodies),
        cmocka_unit_test(test_sign_timestamp_and_id_change_signature),
        cmocka_unit_test(test_sign_empty_body),
        cmocka_unit_test(test_sign_key_rejects_bad_secrets),
        cmocka_unit_test(test_sign_webhook_id_stable_per_delivery),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
