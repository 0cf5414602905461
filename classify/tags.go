package classify

import "github.com/harvest-hub/edge/firestorepath"

// Tag prefixes. Every tag embeds the full resource name (or the database for groups),
// so tags of different databases never meet.
const (
	docPrefix   = "doc:"   // doc:<document name>
	collPrefix  = "coll:"  // coll:<collection name>: lists and non-group queries
	groupPrefix = "group:" // group:<database>/<collectionId>: collection-group queries
	collsPrefix = "colls:" // colls:<document name or documents root>: listCollectionIds
	allPrefix   = "all:"   // all:<database>: every read of the database carries it
)

func docTag(name string) string           { return docPrefix + name }
func collTag(collection string) string    { return collPrefix + collection }
func groupTag(database, id string) string { return groupPrefix + database + "/" + id }
func collsTag(parent string) string       { return collsPrefix + parent }

// DatabaseTag is the tag every cached read of database ("projects/p/databases/d")
// carries besides its own: bumping it invalidates every entry of the database in O(1)
// (the admin purge of everything, the emulator's wipe).
func DatabaseTag(database string) string { return allPrefix + database }

// GroupTag is the tag of collection-group queries on collectionID in database.
func GroupTag(database, collectionID string) string { return groupTag(database, collectionID) }

// CollectionTags returns the tags of the lists and queries of one collection (its
// coll: tag) and of the collection-group queries on its id, for collection relative
// to database's documents root ("farmers/f1/products"); nil when it names no
// collection.
func CollectionTags(database, collection string) []string {
	d, err := firestorepath.ParseName(database + "/documents/" + collection)
	if err != nil || !d.IsCollection() || d.Database() != database {
		return nil
	}
	return []string{collTag(d.Name()), groupTag(database, d.ID())}
}

// WriteTags returns the tags a write of one document touches, deduplicated: for
// "projects/p/databases/d/documents/farmers/f1/products/p1" they are
//
//	doc:projects/p/databases/d/documents/farmers/f1/products/p1
//	coll:projects/p/databases/d/documents/farmers/f1/products
//	group:projects/p/databases/d/products
//	colls:projects/p/databases/d/documents/farmers/f1
//	colls:projects/p/databases/d/documents
//
// colls: is bumped for every ancestor document and the root, not only the parent:
// creating the first document under farmers/f1/products makes "farmers" appear in the
// root's listCollectionIds (a collection exists while anything below it does).
//
// document is the full resource name, or a path relative to database's documents root
// ("farmers/f1/products/p1", as in a CloudEvent subject without "documents/").
// WriteTags returns nil when it does not name a document.
func WriteTags(database, document string) []string {
	root := database + "/documents"
	name := document
	if len(document) <= len(root) || document[:len(root)] != root || document[len(root)] != '/' {
		name = root + "/" + document
	}
	d, err := firestorepath.ParseName(name)
	if err != nil || !d.IsDocument() || d.Database() != database {
		return nil
	}
	return dedupe(appendWriteTags(nil, d))
}

// appendWriteTags appends the tags a write at d touches. d is a document, or a
// collection when the server picks the new document's id (then no doc: tag).
func appendWriteTags(tags []string, d firestorepath.Path) []string {
	if d.IsDocument() {
		tags = append(tags, docTag(d.Name()))
	}
	tags = append(tags, collTag(d.Collection()), groupTag(d.Database(), d.CollectionID()))
	for name := range d.AncestorDocuments {
		tags = append(tags, collsTag(name))
	}
	return tags
}
