/*
 * fuzz: what the libFuzzer targets in tests/fuzz share.
 *
 * Each target feeds its input to the function ingest (or the config
 * loader) really calls, then pushes whatever that accepted through the
 * functions that consume it later: routing's attribute lookup, delivery's
 * structured and binary output, the spool round trip. Besides the
 * sanitizers' reports, a target aborts when one of Ferry's own contracts
 * breaks (FUZZ_CHECK), e.g. "an event Ferry accepted can be delivered in
 * binary mode and ingested again". See tests/fuzz/README.md.
 */
#ifndef FERRY_FUZZ_H
#define FERRY_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

/* libFuzzer's entry point; every target defines it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/** Print "fuzz contract broken: ..." and abort (libFuzzer saves the input). */
void fuzz_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define FUZZ_CHECK(cond, ...)                                                \
    do {                                                                     \
        if (!(cond))                                                         \
            fuzz_fail(__FILE__, __LINE__, __VA_ARGS__);                      \
    } while (0)

/**
 * Run an event that ingest accepted (@ev, borrowed) through what happens
 * to it afterwards, checking the round trips:
 *   - the required attributes are there for routing (event_attr);
 *   - the spool form reloads to an equal event (event_load) whose
 *     structured output is byte-for-byte the same;
 *   - structured output (event_to_structured) is an event ingest accepts
 *     again, with the same attributes;
 *   - binary output (event_binary_headers) is an event binary-mode ingest
 *     accepts again, attribute for attribute;
 *   - adding a trace context extension (event_add_attr) keeps it valid.
 */
void fuzz_check_event(const struct event *ev);

/**
 * A refusal (@rc from an ingest parser, @err filled) is well formed: -EINVAL
 * with one of the contract's error codes, and a non-empty message and an
 * attribute that are valid UTF-8, because ingest sends both back in a JSON
 * error body (a string jansson refuses would turn the answer into
 * {"error":"internal"}).
 */
void fuzz_check_refusal(int rc, const struct ce_error *err);

/** A copy of @len bytes of @p plus a NUL, or abort. Caller frees. */
char *fuzz_strndup(const void *p, size_t len);

#endif
