package handlers

import "github.com/gofiber/fiber/v2"

type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// catalog is the set of models the router serves.
var catalog = []model{
	{"anthropic/claude-sonnet-4.5", "model", 1759104000, "anthropic"},
	{"anthropic/claude-haiku-4.5", "model", 1760486400, "anthropic"},
	{"google/gemini-2.5-pro", "model", 1750118400, "google"},
	{"google/gemini-2.5-flash", "model", 1750118400, "google"},
	{"meta-llama/llama-3.3-70b-instruct", "model", 1733443200, "meta-llama"},
	{"mistralai/mistral-large", "model", 1731888000, "mistralai"},
	{"openai/gpt-4.1", "model", 1744588800, "openai"},
	{"openai/gpt-4o-mini", "model", 1721260800, "openai"},
}

// Models: GET /v1/models → the OpenAI-style model list.
func Models(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"object": "list", "data": catalog})
}
