/*
 * validate: CloudEvents 1.0 attribute rules, on a parsed JSON object.
 * Required: id, source, specversion ("1.0"), type, each a non-empty string.
 * Optional with types: datacontenttype (string, RFC 2046), dataschema
 * (URI), subject (string), time (RFC 3339 timestamp). Extension names are
 * 1-20 characters of [a-z0-9]; values string, integer (32-bit signed) or
 * boolean. "data" and "data_base64" are allowed only where @allow_data,
 * never both, and data_base64 must be valid base64.
 * Pure module.
 */
#ifndef FERRY_VALIDATE_H
#define FERRY_VALIDATE_H

#include <stdbool.h>
#include <jansson.h>

#include "event.h"

/**
 * Check @obj (borrowed). Returns 0, or -EINVAL with @err set to
 * invalid_event, the offending attribute and a message; @index is copied
 * into @err for batch reporting.
 */
int validate_event(json_t *obj, bool allow_data, long index,
                   struct ce_error *err);

/** True when @s is an RFC 3339 date-time (e.g. 2026-11-22T10:00:00.5Z). */
bool validate_rfc3339(const char *s);

/** True when @name is a legal attribute name: [a-z0-9]{1,20}. */
bool validate_attr_name(const char *name, size_t len);

#endif
