variable "endpoint" {
  description = "GCL API URL, including /api. Null falls back to GCL_API_URL / PREFECT_API_URL, then http://127.0.0.1:4280/api."
  type        = string
  default     = null
}

variable "api_key" {
  description = "API key, when the server is started with GCL_API_KEYS. Null falls back to GCL_API_KEY / PREFECT_API_KEY."
  type        = string
  default     = null
  sensitive   = true
}

variable "limits" {
  description = "Limits by name. slot_decay_per_second > 0 makes a rate limit."
  type = map(object({
    limit                 = number
    active                = optional(bool, true)
    slot_decay_per_second = optional(number, 0)
  }))
}
