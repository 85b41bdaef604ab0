package s3store

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Config is the parsed form of an s3:// storage URL.
type Config struct {
	// Bucket is the bucket name. Required.
	Bucket string
	// Prefix is prepended to every key ("" for none); no leading or
	// trailing slash.
	Prefix string
	// Region is the bucket's region; from the AWS chain (AWS_REGION,
	// shared config) if empty, and us-east-1 if that has none either.
	Region string
	// Endpoint is the S3 endpoint URL for S3-compatible servers; AWS if
	// empty.
	Endpoint string
	// PathStyle reports whether to address the bucket in the path
	// (http://host/bucket/key) rather than the host name.
	PathStyle bool
	// SSE is the server-side encryption: "" (the bucket default),
	// "AES256" (SSE-S3) or "aws:kms" (SSE-KMS).
	SSE string
	// KMSKeyID is the KMS key for SSE-KMS; the AWS managed key if empty.
	KMSKeyID string
	// StorageClass is the objects' storage class; the bucket default
	// (STANDARD) if empty.
	StorageClass string
	// Tags are set on every object.
	Tags map[string]string
	// ObjectLockMode is "", "GOVERNANCE" or "COMPLIANCE"; with it, every
	// object is retained for ObjectLockDays from its upload.
	ObjectLockMode string
	// ObjectLockDays is the retention period in days; required with
	// ObjectLockMode.
	ObjectLockDays int
}

// ParseURL parses s3://bucket/prefix?region=…&endpoint=…&path_style=true
// &sse=aws:kms&kms_key_id=…&storage_class=…&tags=k=v,k2=v2
// &object_lock_mode=GOVERNANCE&object_lock_days=N. Errors name the
// setting; a URL with credentials in it is refused.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, errors.New("storage: not a valid s3:// URL")
	}
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("storage: scheme %q is not s3", u.Scheme)
	}
	if u.User != nil {
		return Config{}, errors.New("storage: credentials in the s3:// URL are not allowed; " +
			"use the AWS credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, shared config, instance or pod role)")
	}
	c := Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	if c.Bucket == "" {
		return Config{}, errors.New("storage: s3:// URL has no bucket (want s3://bucket/prefix)")
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "region", "endpoint", "path_style", "sse", "kms_key_id", "storage_class", "tags", "object_lock_mode", "object_lock_days":
		default:
			return Config{}, fmt.Errorf("storage: unknown s3 setting %q", k)
		}
	}
	c.Region = q.Get("region")
	c.Endpoint = q.Get("endpoint")
	if c.Endpoint != "" {
		e, err := url.Parse(c.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return Config{}, fmt.Errorf("storage: endpoint %q: want http(s)://host[:port]", c.Endpoint)
		}
		if e.User != nil {
			return Config{}, errors.New("storage: credentials in the endpoint URL are not allowed")
		}
	}
	if v := q.Get("path_style"); v != "" {
		c.PathStyle, err = strconv.ParseBool(v)
		if err != nil {
			return Config{}, fmt.Errorf("storage: path_style %q: want true or false", v)
		}
	}
	switch v := q.Get("sse"); strings.ToLower(v) {
	case "":
	case "aes256", "s3", "sse-s3":
		c.SSE = "AES256"
	case "aws:kms", "kms", "sse-kms":
		c.SSE = "aws:kms"
	default:
		return Config{}, fmt.Errorf("storage: sse %q: want AES256 or aws:kms", v)
	}
	c.KMSKeyID = q.Get("kms_key_id")
	if c.KMSKeyID != "" && c.SSE != "aws:kms" {
		return Config{}, errors.New("storage: kms_key_id needs sse=aws:kms")
	}
	c.StorageClass = strings.ToUpper(q.Get("storage_class"))
	if v := q.Get("tags"); v != "" {
		c.Tags = map[string]string{}
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return Config{}, fmt.Errorf("storage: tags %q: want k=v,k2=v2", v)
			}
			c.Tags[k] = val
		}
	}
	switch m := strings.ToUpper(q.Get("object_lock_mode")); m {
	case "":
	case "GOVERNANCE", "COMPLIANCE":
		c.ObjectLockMode = m
	default:
		return Config{}, fmt.Errorf("storage: object_lock_mode %q: want GOVERNANCE or COMPLIANCE", m)
	}
	if v := q.Get("object_lock_days"); v != "" {
		c.ObjectLockDays, err = strconv.Atoi(v)
		if err != nil || c.ObjectLockDays <= 0 {
			return Config{}, fmt.Errorf("storage: object_lock_days %q: want a positive number of days", v)
		}
	}
	if (c.ObjectLockMode == "") != (c.ObjectLockDays == 0) {
		return Config{}, errors.New("storage: object_lock_mode and object_lock_days go together")
	}
	return c, nil
}

// key returns the object key of k under the prefix.
func (c *Config) key(k string) string {
	if c.Prefix == "" {
		return k
	}
	return c.Prefix + "/" + k
}
